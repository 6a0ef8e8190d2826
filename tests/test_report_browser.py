"""report.html opened in a real headless Chromium (Debian's chromium, driven by Playwright with
executable_path: Playwright never downloads a browser here): it renders its sections, logs no
console error, makes no request but its own file, and a hostile document runs no script.

Skipped only when /usr/bin/chromium is absent (CI installs it: .ci/run)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: "
                                                         "apt-get install chromium)")

PAYLOAD = ('<script>window.__pwned = 1</script> <img src=x onerror="window.__pwned = 2"> '
           '</textarea><script>window.__pwned = 3</script> </pre><svg onload="window.__pwned = 4">'
           '<link rel=stylesheet href="http://127.0.0.1:9/x.css"> <iframe src="http://127.0.0.1:9/">')
HOSTILE_URL = 'javascript:window.__pwned=5//"><script>window.__pwned=6</script>'
SECTIONS = ("summary", "histogram", "quartiles", "deciles", "domains", "examples")


def _scored_parquet(path: Path) -> None:
    n = 60
    texts = [f"el documento número {i} habla de la ciudad y del río" for i in range(n)]
    urls = [f"https://sitio{i % 4}.es/{i}" for i in range(n)]
    pps = [100.0 + 10 * i for i in range(n)]
    # the lowest and the highest perplexity: always shown as examples of their bands
    texts += [PAYLOAD, "texto normal"]
    urls += ["https://malo.es/1", HOSTILE_URL]
    pps += [1.5, 1e6]
    pq.write_table(pa.table({"text": texts, "url": urls, "timestamp": [None] * len(texts),
                             "perplexity": pps, "n_tokens": [12] * len(texts)}), path)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    scored = root / "c4-es.tfrecord-00000-of-00001.parquet"
    _scored_parquet(scored)
    for method in ("gaussian", "random"):
        assert main(["sample", "--input", str(scored), "--output", str(root / method),
                     "--method", method, "-q"]) == 0
    return root


class Page:
    """One page load: console messages, requests, and the page to query."""

    def __init__(self, browser, path: Path, screenshot: Path):
        self.console, self.requests, self.errors = [], [], []
        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        page.on("console", lambda m: self.console.append((m.type, m.text)))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("dialog", lambda d: (self.errors.append(f"dialog {d.message}"), d.dismiss()))
        self.url = path.resolve().as_uri()
        page.goto(self.url, wait_until="load")
        page.wait_for_timeout(200)  # an onerror/onload handler would have fired by now
        page.screenshot(path=str(screenshot), full_page=True)
        self.page = page

    def hostile_effects(self) -> list[str]:
        found = []
        if self.page.evaluate("window.__pwned") is not None:
            found.append(f"script ran: window.__pwned = {self.page.evaluate('window.__pwned')}")
        for selector in ("script", "img", "iframe", "link", "textarea", "[onerror]", "[onload]",
                         "a[href]"):
            if self.page.locator(selector).count():
                found.append(f"element {selector} in the page")
        if self.errors:
            found.append(f"page errors {self.errors}")
        if [m for m in self.console if m[0] == "error"]:
            found.append(f"console errors {self.console}")
        if set(self.requests) != {self.url}:
            found.append(f"requests {self.requests}")
        return found


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # root in a container: Chromium's sandbox needs user namespaces it may not have
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox"])
        yield browser
        browser.close()


def _screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("PPSAMPLE_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_report_renders_its_sections_offline_and_runs_no_hostile_script(outputs, browser,
                                                                         tmp_path):
    shot = _screenshot_dir(tmp_path) / "report.png"
    page = Page(browser, outputs / "gaussian" / "report.html", shot)
    assert page.hostile_effects() == []
    for name in SECTIONS:
        assert page.page.locator(f"#o1-{name}").count() == 1, name
    assert page.page.locator("#o1-histogram svg polyline").count() == 1  # the keep curve
    assert page.page.locator("#o1-quartiles tr").count() == 5  # header + 4 bands
    assert page.page.locator("#o1-deciles tr").count() == 11
    assert page.page.locator("#o1-histogram svg").bounding_box()["height"] > 200
    text = page.page.locator("body").text_content()
    assert PAYLOAD in text  # the hostile document is shown, as text
    assert HOSTILE_URL in text
    assert "sitio0.es" in page.page.locator("#o1-domains").text_content()
    assert shot.stat().st_size > 20_000


def test_comparison_page_of_two_outputs(outputs, browser, tmp_path):
    html = tmp_path / "compare.html"
    assert main(["report", "--input", str(outputs / "gaussian"), "--input",
                 str(outputs / "random"), "--output", str(html)]) == 0
    page = Page(browser, html, _screenshot_dir(tmp_path) / "compare.png")
    assert page.hostile_effects() == []
    assert page.page.locator("#comparison tr").count() == 3
    assert page.page.locator("#comparison svg polyline").count() == 2  # one curve per output
    assert page.page.locator("#o1-examples").count() == page.page.locator("#o2-examples").count() == 1


def test_the_browser_check_catches_an_unescaped_document(outputs, browser, tmp_path,
                                                         monkeypatch):
    """Fault injected: without html.escape the same page runs nothing (the CSP blocks inline
    script) but the check sees the hostile elements and the CSP's console errors."""
    from pipelines.report import command, render

    monkeypatch.setattr(render, "esc", str)
    html = tmp_path / "unescaped.html"
    html.write_bytes(command.html_bytes([("x", *command.read_output(str(outputs / "gaussian")))]))
    found = Page(browser, html, tmp_path / "unescaped.png").hostile_effects()
    assert any("element script" in f for f in found), found
    assert any("element img" in f for f in found), found


def test_same_input_and_seed_give_the_same_report_bytes(outputs):
    """report.json is the same with 2 workers; report.html (which shows the command) is the
    same byte for byte when the same command runs again."""
    out = outputs / "gaussian"
    first, first_json = (out / "report.html").read_bytes(), (out / "report.json").read_bytes()
    args = ["sample", "--input", str(outputs / "c4-es.tfrecord-00000-of-00001.parquet"),
            "--output", str(out), "--method", "gaussian", "-q"]
    assert main(args + ["--direct_num_workers", "2"]) == 0
    assert (out / "report.json").read_bytes() == first_json
    assert main(args) == 0
    assert (out / "report.html").read_bytes() == first
