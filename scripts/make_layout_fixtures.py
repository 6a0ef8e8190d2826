"""Writes tests/data/layouts/: small files in the layouts of FineWeb-2, OSCAR 23.01, CulturaX,
HPLT v1.2 and HPLT v2 (field names and types from their dataset cards, see pipelines/corpus_io/layouts.py),
holding real Spanish documents of ../shared/data/es/web.jsonl.gz (SOURCES.md there). The
metadata (ids, dates, scores) is made up, deterministically: same input, same files.

Each file ends with one record without its text field (a dead letter the pipeline must count).

    python scripts/make_layout_fixtures.py [--shared ../shared/data] [--out tests/data/layouts]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DOCS_PER_FILE = 24
NAMESPACE = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")  # uuid.NAMESPACE_URL


def _docs(shared: Path, start: int) -> list[dict]:
    with gzip.open(shared / "es" / "web.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    # every 7th document from `start`: news, help pages and fortunes mixed, some without url
    picked = docs[start::7][:DOCS_PER_FILE]
    return picked


def _number(text: str, salt: str, modulo: int) -> int:
    return int.from_bytes(hashlib.sha256((salt + text).encode()).digest()[:8], "little") % modulo


def _urn(text: str, salt: str) -> str:
    return f"<urn:uuid:{uuid.uuid5(NAMESPACE, salt + text)}>"


def _url(doc: dict, i: int, host: str) -> str:
    return doc["url"] or f"https://{host}/pagina/{i}"


def fineweb2(docs: list[dict]) -> pa.Table:
    rows = []
    for i, d in enumerate(docs):
        t = d["text"]
        rows.append({
            "text": t, "id": _urn(t, "fw2"), "dump": f"CC-MAIN-2024-{10 + _number(t, 'dump', 8):02d}",
            "url": _url(d, i, "fineweb.example.es"),
            "date": f"2024-02-{1 + _number(t, 'day', 28):02d}T{_number(t, 'h', 24):02d}:13:05Z",
            "file_path": f"s3://commoncrawl/crawl-data/CC-MAIN-2024-10/segments/{_number(t, 'seg', 10**6)}/warc/x.warc.gz",
            "language": "spa", "language_score": 0.5 + _number(t, "ls", 5000) / 10000,
            "language_script": "Latn", "minhash_cluster_size": 1 + _number(t, "mh", 40),
            "top_langs": json.dumps({"spa_Latn_score": 0.9}),
        })
    rows.append({**rows[0], "text": None, "id": _urn("no text", "fw2")})  # the dead letter
    schema = pa.schema([("text", pa.string()), ("id", pa.string()), ("dump", pa.string()),
                        ("url", pa.string()), ("date", pa.string()), ("file_path", pa.string()),
                        ("language", pa.string()), ("language_score", pa.float64()),
                        ("language_script", pa.string()), ("minhash_cluster_size", pa.int64()),
                        ("top_langs", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


def oscar(docs: list[dict]) -> list[dict]:
    records = []
    for i, d in enumerate(docs):
        t = d["text"]
        lines = t.split("\n")
        records.append({
            "content": t,
            "warc_headers": {
                "warc-record-id": _urn(t, "oscar"), "warc-date": f"2022-11-{1 + _number(t, 'd', 28):02d}T05:51:43Z",
                "content-type": "text/plain", "content-length": str(len(t.encode())),
                "warc-type": "conversion", "warc-identified-content-language": "spa",
                "warc-refers-to": _urn(t, "ref"), "warc-target-uri": _url(d, i, "oscar.example.es"),
                "warc-block-digest": "sha1:" + hashlib.sha1(t.encode()).hexdigest().upper()[:32],
            },
            "metadata": {
                "identification": {"label": "es", "prob": round(0.6 + _number(t, "p", 400) / 1000, 3)},
                "harmful_pp": round(100 + _number(t, "hp", 90000) / 10, 1),
                "tlsh": "tlsh:T1" + hashlib.sha256(t.encode()).hexdigest().upper()[:70],
                "quality_warnings": ["short_sentences"] if len(lines) < 3 else None,
                "categories": None,
                "sentence_identifications": [{"label": "es", "prob": 0.9} if line.strip() else None
                                             for line in lines[:5]],
            },
        })
    bad = json.loads(json.dumps(records[0]))
    del bad["content"]
    bad["warc_headers"]["warc-record-id"] = _urn("no content", "oscar")
    records.append(bad)
    return records


def culturax(docs: list[dict]) -> pa.Table:
    rows = [{"text": d["text"], "timestamp": f"2019/04/{1 + _number(d['text'], 'ts', 28):02d} 10:00:00",
             "url": _url(d, i, "culturax.example.es"), "source": "mC4" if i % 2 else "OSCAR-2019"}
            for i, d in enumerate(docs)]
    rows.append({**rows[0], "text": None})
    schema = pa.schema([("text", pa.string()), ("timestamp", pa.string()), ("url", pa.string()),
                        ("source", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


def hplt(docs: list[dict]) -> list[dict]:
    records = []
    for i, d in enumerate(docs):
        paragraphs = d["text"].split("\n")
        records.append({"id": 1000 + i, "document_lang": "es",
                        "scores": [round(0.5 + _number(p, "s", 500) / 1000, 3) for p in paragraphs[:8]],
                        "langs": ["es"] * min(len(paragraphs), 8), "text": d["text"],
                        "url": _url(d, i, "hplt.example.es"), "collection": "wide00016"})
    records.append({k: v for k, v in records[0].items() if k != "text"} | {"id": 999})
    return records


def hplt2(docs: list[dict]) -> list[dict]:
    """HPLT v2 cleaned JSON lines (hplt-project.org/datasets/v2.0): the WARC file, offset and
    sizes (f, o, s, rs), url `u`, content type `c`, timestamp `ts`, OpenLID's document languages
    and probabilities (lang, prob), per-line languages (seg_langs), robots.txt and filter
    verdicts, PII spans and web-docs-scorer's scores (overall, then 8 subscores, 0-10)."""
    records = []
    for i, d in enumerate(docs):
        t = d["text"]
        lines = t.split("\n")
        records.append({
            "f": f"wide00016/20230{1 + _number(t, 'f', 9)}/warc_{_number(t, 'w', 100):03d}.warc.gz",
            "o": _number(t, "o", 10**10), "s": len(t.encode()) + 900, "rs": len(t.encode()) * 3,
            "u": _url(d, i, "hplt2.example.es"), "c": "text/html",
            "ts": f"2023-0{1 + _number(t, 'm', 9)}-{1 + _number(t, 'day', 28):02d}T03:53:51Z",
            "collection": "wide00016" if i % 2 else "cc40",
            "lang": ["spa_Latn", "glg_Latn"], "prob": [0.9 + _number(t, "p", 90) / 1000, 0.02],
            "text": t, "seg_langs": ["spa_Latn" if line.strip() else "unk" for line in lines],
            "robotstxt": "allowed" if i % 5 else "disallowed", "id": hashlib.md5(t.encode()).hexdigest(),
            "filter": "keep", "pii": [[0, 4]] if i % 7 == 0 else [],
            "doc_scores": [round(5 + _number(t, f"s{k}", 50) / 10, 1) for k in range(9)],
        })
    records.append({k: v for k, v in records[0].items() if k != "text"} | {"id": "0" * 32})
    return records


def _write_jsonl_gz(path: Path, records: list[dict]) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--shared", type=Path, default=root.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=root / "tests" / "data" / "layouts")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pq.write_table(fineweb2(_docs(args.shared, 0)), args.out / "fineweb2.parquet")
    _write_jsonl_gz(args.out / "oscar.jsonl.gz", oscar(_docs(args.shared, 1)))
    pq.write_table(culturax(_docs(args.shared, 2)), args.out / "culturax.parquet")
    _write_jsonl_gz(args.out / "hplt.jsonl.gz", hplt(_docs(args.shared, 3)))
    _write_jsonl_gz(args.out / "hplt2.jsonl.gz", hplt2(_docs(args.shared, 4)))


if __name__ == "__main__":
    main()
