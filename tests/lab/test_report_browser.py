"""The exported report as a reader meets it: headless Chromium at 800 and 1400 px.

Built from fabricated run folders with two budgets (the final stage at 10 epochs and at 2 epochs, the
training modes at 2 epochs), so no sweep is needed. Checks: the verdict sentences and the forest plot lie
within the first screen (no scrolling) at both widths; the page never scrolls sideways; with every section
opened, the headline tables (one stage and budget each) have no horizontal scroll at 1400 px; the table of
contents opens the section it links to. Screenshots of the first screen at both widths are saved under
pytest's tmp path (printed: run with -s to see the paths).
"""
from __future__ import annotations

import base64
import time

import pytest

from test_report_verdicts import synthetic_runs
from test_jupyterlab import CHROMIUM, NO_CHROMIUM, browser  # noqa: F401  (the fixture: one Chromium page)

FIRST_SCREEN_HEIGHT = 900  # a laptop's browser window: the first screen a reader sees without scrolling
WIDTHS = (800, 1400)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from qmlnb.lab import report

    root = tmp_path_factory.mktemp("report")
    synthetic_runs(root / "runs")
    return report.build_report(root / "runs", root / "reports")


def load(browser, page, width):  # noqa: F811
    browser.call("Emulation.setDeviceMetricsOverride", width=width, height=FIRST_SCREEN_HEIGHT, deviceScaleFactor=1,
                 mobile=False)
    browser.call("Page.enable")
    browser.call("Page.navigate", url=page.as_uri())
    browser.wait("document.readyState === 'complete' && document.querySelectorAll('details.qmlnb-section').length > 0"
                 " && [...document.images].every(i => i.complete)", 30, "the report to load and fold its sections",
                 "document.readyState")
    browser.js("window.scrollTo(0, 0)")
    time.sleep(0.2)


def screenshot(browser, path):  # noqa: F811
    data = browser.call("Page.captureScreenshot", format="png")["data"]
    path.write_bytes(base64.b64decode(data))
    print(f"screenshot: {path}")


@pytest.mark.slow  # builds a report (papermill) and drives Chromium
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
@pytest.mark.parametrize("width", WIDTHS)
def test_verdict_and_forest_plot_fill_the_first_screen(browser, page, width, tmp_path):  # noqa: F811
    load(browser, page, width)
    screenshot(browser, tmp_path / f"first-screen-{width}.png")
    box = browser.js("""(() => {
        const r = e => { const b = e.getBoundingClientRect(); return [b.top, b.bottom, b.right, b.width]; };
        return {sentences: [...document.querySelectorAll('#qmlnb-verdict li')].map(r),
                forest: [...document.querySelectorAll('.qmlnb-forest img')].map(r),
                text: document.querySelector('#qmlnb-verdict').innerText,
                height: window.innerHeight, width: window.innerWidth,
                pageWidth: document.documentElement.scrollWidth};
    })()""")
    assert len(box["sentences"]) >= 6 and len(box["forest"]) == 1, box
    for top, bottom, right, _ in box["sentences"] + box["forest"]:
        assert 0 <= top and bottom <= box["height"] and right <= box["width"], (box, top, bottom)
    assert box["forest"][0][3] > 300  # the figure is drawn at a readable size, not a thumbnail
    assert box["pageWidth"] <= box["width"], "the page scrolls sideways"
    # the sentences say what a referee needs: the comparison, its interval or its seeds, the reference
    text = box["text"]
    assert "QCNN − CNN" in text and "QSVM − RBF SVM" in text and "sequential training on 1 thread:" in text
    assert "lost in all 5 seeds" in text or "won in all 5 seeds" in text
    assert "Holm-corrected" in text


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_headline_tables_fit_at_1400_px_and_each_holds_one_budget(browser, page, tmp_path):  # noqa: F811
    load(browser, page, 1400)
    toc = browser.js("[...document.querySelectorAll('#qmlnb-toc a')].map(a => a.getAttribute('href'))")
    assert len(toc) >= 8
    # the table of contents opens the section it links to
    browser.js(f"location.hash = {toc[0]!r}")
    browser.wait("document.querySelector('details.qmlnb-section').open", 5, "the first section to open")
    browser.js("document.querySelectorAll('details.qmlnb-section').forEach(d => d.open = true)")
    screenshot(browser, tmp_path / "headline-tables-1400.png")
    tables = browser.js("""[...document.querySelectorAll('table[data-stage]')].map(t => ({
        stage: t.dataset.stage, budget: t.dataset.budget, scroll: t.parentElement.scrollWidth,
        box: t.parentElement.clientWidth}))""")
    # digits at 10 and 2 epochs, fashion-mnist at 10: three final tables; two modes tables
    assert sorted((t["stage"], t["budget"].split(",")[0]) for t in tables) == [
        ("final", "epochs=10"), ("final", "epochs=10"), ("final", "epochs=2"), ("final-modes", "epochs=2"),
        ("final-modes", "epochs=2")]
    for t in tables:
        assert t["scroll"] <= t["box"], f"headline table scrolls sideways at 1400 px: {t}"
