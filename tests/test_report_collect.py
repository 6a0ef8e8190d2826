"""report.json's data is collected inside the pipeline: bounded per shard, and the same whatever
way the per-shard pieces are merged (pipelines.report.collect)."""
from __future__ import annotations

import collections
import pickle
import random

import numpy as np
import pytest

from pipelines.corpus.plan import SamplingRequest, decide_with_uniforms, resolve_plan
from pipelines.report import collect
from sampling import LogHistogram, band_of


def test_url_host():
    assert collect.url_host("https://User:pw@WWW.Example.es:8080/a?b#c") == "www.example.es"
    assert collect.url_host("http://[::1]:80/x") == "[::1]"
    assert collect.url_host("http://elpais.com") == "elpais.com"
    for no_host in (None, "", "   ", "/relative/path", "elpais.com/x", "mailto:a@b.c", 7):
        assert collect.url_host(no_host) is None, no_host


def test_shard_domains_keep_every_heavy_host_with_a_lower_bound_count():
    """Misra-Gries with 16 counters: a host seen more than n/16 times is always kept, and no
    count exceeds the true one."""
    rng = random.Random(1)
    urls = [f"https://heavy{i}.es/{k}" for i in range(4) for k in range(300)]
    urls += [f"https://rare{k}.es/" for k in range(3000)]
    rng.shuffle(urls)
    counter = collect.ShardDomains(capacity=16)
    counter.add(urls)
    true = collections.Counter(collect.url_host(u) for u in urls)
    assert len(counter.counts) <= 16
    assert {f"heavy{i}.es" for i in range(4)} <= set(counter.counts)
    assert all(c <= true[h] for h, c in counter.counts.items())
    assert {h for h, _ in counter.top(4)} == {f"heavy{i}.es" for i in range(4)}


def _tree_merge(parts, rng, merge):
    """Merges the parts in a random order and a random tree shape (as Beam's combiners may)."""
    parts = list(parts)
    rng.shuffle(parts)
    while len(parts) > 1:
        i = rng.randrange(len(parts) - 1)
        parts[i:i + 2] = [merge(parts[i], parts[i + 1])]
    return parts[0]


def test_candidate_hosts_do_not_depend_on_merge_order(monkeypatch):
    monkeypatch.setattr(collect, "DOMAIN_CANDIDATES", 6)
    rng = random.Random(7)
    shards = [[(f"h{rng.randrange(40)}.es", rng.randrange(1, 50)) for _ in range(12)]
              for _ in range(30)]
    best: dict = {}
    for shard in shards:
        for host, count in shard:
            best[host] = max(best.get(host, 0), count)
    expected = dict(sorted(best.items(), key=lambda hc: (-hc[1], hc[0]))[:6])

    def merge(a, b):
        return collect.merge_candidates(dict(a), b)

    results = [_tree_merge([collect.merge_candidates({}, s) for s in shards], random.Random(s),
                           merge) for s in range(20)]
    assert all(r == expected for r in results)


def _corpus(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    pp = np.exp(rng.normal(6.0, 0.6, n))
    hosts = [f"site{int(k)}.es" for k in rng.zipf(1.6, n) % 50]
    return [{"text": f"documento {i} " + "palabra " * int(rng.integers(1, 300)),
             "url": f"https://{hosts[i]}/{i}" if i % 17 else None,
             "perplexity": float(pp[i]), "n_tokens": int(rng.integers(0, 2000))}
            for i in range(n)]


def _plan(docs):
    histogram = LogHistogram().add([d["perplexity"] for d in docs])
    return resolve_plan(None, {"train": histogram}, SamplingRequest(seed=3))


def _shard_reports(docs, plan, rplan, n_shards=9):
    reports = []
    for k in range(n_shards):
        report = collect.ShardReport(rplan, plan.boundaries)
        part = docs[k::n_shards]
        for start in range(0, len(part), 100):  # batches, as the DoFn decides them
            batch = part[start:start + 100]
            kept, _, uniforms = decide_with_uniforms(batch, plan)
            report.add(batch, kept, "train", uniforms)
        reports.append(pickle.loads(pickle.dumps(report)))  # as they travel between workers
    return reports


def test_reports_merge_to_the_single_pass_result_in_any_order():
    docs = _corpus()
    plan = _plan(docs)
    domains = collect.ShardDomains()
    domains.add(d["url"] for d in docs)
    rplan = collect.report_plan(None, plan, domains.shrink().counts)
    single = collect.ShardReport(rplan, plan.boundaries)
    kept, _, uniforms = decide_with_uniforms(docs, plan)
    single.add(docs, kept, "train", uniforms)
    expected = single.to_dict()
    for order in range(6):
        merged = _tree_merge(_shard_reports(docs, plan, rplan), random.Random(order),
                             collect.merge_reports)
        assert merged.to_dict() == expected


def test_report_counts_and_examples_are_those_of_the_documents():
    """Against a brute-force pass: per band documents, kept, tokens; exact host counts; the
    lowest and highest examples are the band's extremes; the median comes from the band."""
    docs = _corpus(n=2000, seed=5)
    plan = _plan(docs)
    kept, _, _ = decide_with_uniforms(docs, plan)
    counter = collect.ShardDomains()
    counter.add(d["url"] for d in docs)
    rplan = collect.report_plan(None, plan, counter.shrink().counts)
    merged = _tree_merge(_shard_reports(docs, plan, rplan), random.Random(0),
                         collect.merge_reports).to_dict()
    pp = np.array([d["perplexity"] for d in docs])
    quartile = band_of(pp, plan.boundaries)
    for b in range(4):
        band = merged["bands"][b]
        members = np.flatnonzero(quartile == b)
        assert band["documents"] == len(members)
        assert band["kept"] == int(kept[members].sum())
        assert band["tokens"] == sum(docs[i]["n_tokens"] for i in members)
        assert sum(band["length_log2_tokens"]) == len(members)
        hosts = collections.Counter(collect.url_host(docs[i]["url"]) for i in members)
        for entry in band["top_domains"]:
            assert entry["documents"] == hosts[entry["host"]]
        top = [h for h, _ in sorted(((h, c) for h, c in hosts.items() if h), key=lambda hc: -hc[1])]
        assert band["top_domains"][0]["host"] == top[0]
        for decision, mask in (("kept", kept), ("dropped", ~kept)):
            chosen = members[mask[members]]
            ex = band["examples"][decision]
            assert ex["lowest"]["perplexity"] == pp[chosen].min()
            assert ex["highest"]["perplexity"] == pp[chosen].max()
            assert ex["lowest"]["perplexity"] <= ex["median"]["perplexity"] <= \
                ex["highest"]["perplexity"]
            assert len(ex["median"]["excerpt"]) <= collect.EXCERPT_CHARS
    assert sum(b["documents"] for b in merged["bands"][4:]) == len(docs)  # deciles too


def test_a_shard_report_stays_the_same_size_however_many_documents_it_saw():
    """Bounded memory: 10x the documents (each 20 kB of text) leave the report the same size."""
    def size(n):
        docs = [{**d, "text": d["text"] + "x" * 20_000} for d in _corpus(n=n, seed=2)]
        plan = _plan(docs)
        counter = collect.ShardDomains()
        counter.add(d["url"] for d in docs)
        rplan = collect.report_plan(None, plan, counter.shrink().counts)
        return len(pickle.dumps(_shard_reports(docs, plan, rplan, n_shards=1)[0]))

    small, large = size(500), size(5000)
    assert large < 1.1 * small
    assert large < 1_000_000


def test_report_json_survives_a_lone_surrogate():
    docs = [{"text": "a\ud800b", "url": "https://x.es/\udfff", "perplexity": 10.0 + i,
             "n_tokens": 3} for i in range(8)]
    plan = _plan(docs)
    report = collect.ShardReport(collect.report_plan(None, plan, {}), plan.boundaries)
    report.add(docs, np.ones(8, dtype=bool), "train", np.linspace(0, 0.9, 8))
    import json

    json.dumps(report.to_dict(), ensure_ascii=False).encode("utf-8")  # raises on a surrogate


def test_report_command_refuses_a_folder_without_a_sampled_output(tmp_path):
    from pipelines.errors import InputError
    from pipelines.report import command

    (tmp_path / "scored").mkdir()
    (tmp_path / "scored" / "stats.json").write_text('{"stage": "score", "total": {}}')
    (tmp_path / "empty").mkdir()
    for folder, says in ((tmp_path / "empty", "holds no complete ppsample output"),
                         (tmp_path / "scored", "is a `ppsample score` output")):
        args = type("Args", (), {"input": [str(folder)], "output": str(tmp_path / "r.html")})
        with pytest.raises(InputError, match=says.replace("`", ".")):
            command.main(args, [])
    assert not (tmp_path / "r.html").exists()


def test_examples_are_those_of_offering_every_document():
    """ShardReport offers a batch's documents only where they can still be examples; the result
    must be that of offering every document to every band it is in, in order. The batch holds
    hash ties (repeated uniforms: duplicated documents have the same key) and perplexity ties,
    where a filter that counted hashes rather than distinct ones, or dropped a tie, would differ."""
    base = _corpus(n=700, seed=9)
    for d in base:  # coarse perplexities: ties at a cell's lowest and highest
        d["perplexity"] = 50.0 * max(1, round(d["perplexity"] / 50))
    plan = _plan(base)
    kept, _, uniforms = decide_with_uniforms(base, plan)
    # every document twice in a row (duplicates have the same key, hence the same hash)
    docs = [dict(d) for d in base for _ in (0, 1)]
    kept, uniforms = np.repeat(kept, 2), np.repeat(uniforms, 2)
    rplan = collect.report_plan(None, plan, {})
    report = collect.ShardReport(rplan, plan.boundaries)
    for start, stop in ((0, 100), (100, len(docs))):  # a batch, then one with the rest
        report.add(docs[start:stop], kept[start:stop], "train", uniforms[start:stop])

    pp = np.array([d["perplexity"] for d in docs])
    quartile = band_of(pp, plan.boundaries)
    decile = len(collect.QUARTILES) + np.searchsorted(np.array(rplan.deciles), pp, side="left")
    hashes = collect.report_hashes(uniforms)
    reference = [[collect.Examples(), collect.Examples()] for _ in collect.BANDS]
    for i, doc in enumerate(docs):
        e = collect._example(doc, "train", hashes[i])
        for band in (quartile[i], decile[i]):
            reference[band][int(kept[i])].offer(e)
    for band in range(len(collect.BANDS)):
        for decision in (0, 1):
            got, want = report.examples[band][decision], reference[band][decision]
            assert (got.lowest, got.highest, got.sample) == (want.lowest, want.highest, want.sample)
