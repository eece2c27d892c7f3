"""The MLflow UI and the iteration report of the shared smoke run, in a real headless Chromium.

Starts the MLflow server exactly as `src up` does (cli/services.py) on 127.0.0.1 over the
smoke run's store, drives Debian's chromium through its chromedriver (selenium), and checks
what a person would look for: the pipeline run with its iteration runs, their metrics, and
`report.html` in the artifact viewer with every plot drawn. The browser is kept off the
network: every host name but 127.0.0.1 resolves to nothing, and the background services
(updates, sync, safe browsing, metrics) are off.

Screenshots are test outputs, not committed: `$SRC_TEST_OUTPUT/browser/` (default
`.test-output/browser/` in the project), one PNG per page, named in the test below.
Chromium is installed by `make test` (scripts/install_browser.sh); without it the test skips,
except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import free_port

from tests.integration.smoke import ROOT, children, pipeline_runs

ML = "?workflowType=machine_learning"  # MLflow 3's page for training runs (src run prints such links)
OUT = Path(os.environ.get("SRC_TEST_OUTPUT") or ROOT / ".test-output") / "browser"
OFFLINE_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--window-size=1600,1200", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--no-proxy-server", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-default-apps", "--disable-extensions", "--no-first-run",
    "--disable-client-side-phishing-detection", "--disable-domain-reliability",
    "--safebrowsing-disable-auto-update", "--metrics-recording-only",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
]


def _tools() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        msg = "chromium and chromedriver are needed (scripts/install_browser.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return chromium, driver



@pytest.fixture(scope="module")
def ui(first_run):
    """(base URL, browser, client, experiment, pipeline run) over the smoke run's store."""
    chromium, driver = _tools()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from cli.procs import http_ok
    from cli.services import Stack, commands

    state = first_run["state"]
    port = free_port()
    log = open(state / "mlflow-ui.log", "w")
    server = subprocess.Popen(commands(Stack(state, mlflow_port=port))["mlflow"], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while not http_ok(f"{base}/health"):
        assert server.poll() is None and time.time() < deadline, (state / "mlflow-ui.log").read_text()[-2000:]
        time.sleep(1)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in OFFLINE_FLAGS:
        opts.add_argument(flag)
    os.environ.setdefault("SE_AVOID_STATS", "true")  # selenium's own usage statistics: off
    browser = webdriver.Chrome(service=Service(driver), options=opts)
    browser.set_page_load_timeout(60)
    OUT.mkdir(parents=True, exist_ok=True)
    client, exp, runs = pipeline_runs(state)
    try:
        yield base, browser, client, exp, runs[0]
    finally:
        browser.quit()
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _wait_text(browser, *needles: str, timeout: float = 60) -> str:
    """The page's visible text once it shows every needle (the UI renders after load)."""
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        text = browser.find_element("tag name", "body").text
        if all(n in text for n in needles):
            return text
        time.sleep(0.5)
    missing = [n for n in needles if n not in text]
    raise AssertionError(f"{browser.current_url} never showed {missing}; it shows:\n{text[:3000]}")


def _element_with_text(browser, text: str):
    found = browser.find_elements("xpath", f"//*[normalize-space(text())='{text}']")
    assert found, f"{browser.current_url}: nothing reads {text!r}"
    return found[0]


def _wait_element(browser, css: str, timeout: float = 60):
    deadline = time.time() + timeout
    while not browser.find_elements("css selector", css):
        assert time.time() < deadline, f"{browser.current_url}: no element {css!r}"
        time.sleep(0.5)
    return browser.find_element("css selector", css)


def _click_text(browser, text: str) -> None:
    _element_with_text(browser, text).click()


def _show(browser, text: str) -> None:
    """Scroll the (inner) scroll container so that `text` is in view, for the screenshot."""
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", _element_with_text(browser, text))
    time.sleep(0.3)


def _full_page(browser, path: Path) -> None:
    """A screenshot of the whole page, not just the window (Chromium's DevTools protocol)."""
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    path.write_bytes(base64.b64decode(shot["data"]))


def test_the_experiment_opens_on_its_runs_not_on_traces(ui):
    """MLflow 3 opens an experiment without a kind on its GenAI overview (traces, all empty
    here); the project tags its experiments so that the page lists the training runs."""
    from infra.tracking import EXPERIMENT_KIND, TRAINING_KIND

    base, browser, client, exp, parent = ui
    assert client.get_experiment(exp.experiment_id).tags.get(EXPERIMENT_KIND) == TRAINING_KIND
    browser.get(f"{base}/#/experiments/{exp.experiment_id}{ML}")
    _wait_text(browser, parent.info.run_name)
    assert "genai" not in browser.current_url, browser.current_url
    browser.save_screenshot(str(OUT / "experiment.png"))


def test_the_pipeline_run_lists_its_iteration_runs(ui):
    base, browser, client, exp, parent = ui
    browser.get(f"{base}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}{ML}")
    text = _wait_text(browser, parent.info.run_name, "Child runs", "iteration-0", "iteration-1", "iteration-2",
                      "final/eval/accuracy")
    assert "base/eval/accuracy" in text
    browser.save_screenshot(str(OUT / "pipeline-run.png"))
    # the curves of the report's headline metrics (x = iteration: the parent logs them with
    # step = t), filtered by the tab's search box; the UI shows each metric group as its name
    # over a line "(<number of charts>)", and draws the charts in view
    _click_text(browser, "Model metrics")
    box = _wait_element(browser, "input[placeholder='Search metric charts']")
    box.send_keys("^(eval/(accuracy|consistency|factuality)|judge/flip_rate|curate/kept_frac|dpo/loss)$")
    want = {"eval": 3, "judge": 1, "curate": 1, "dpo": 1}
    deadline = time.time() + 60
    groups: dict[str, int] = {}
    while groups != want or not browser.find_elements("css selector", ".js-plotly-plot"):
        assert time.time() < deadline, f"the Model metrics tab shows the chart groups {groups}, not {want}"
        time.sleep(0.5)
        lines = browser.find_element("tag name", "body").text.splitlines()
        groups = {a: int(b[1:-1]) for a, b in zip(lines, lines[1:]) if re.fullmatch(r"\(\d+\)", b)}
    time.sleep(1)  # plotly's transitions
    browser.save_screenshot(str(OUT / "pipeline-run-charts.png"))


def test_each_iteration_run_shows_its_metrics(ui):
    base, browser, client, exp, parent = ui
    for t, run in sorted(children(client, exp, parent.info.run_id).items()):
        browser.get(f"{base}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}{ML}")
        needles = [f"iteration-{t}", "eval/accuracy", "eval/consistency", "eval/factuality", "eval/format_rate",
                   repr(run.data.metrics["eval/accuracy"])]  # the value as logged (JS prints floats alike)
        if t > 0:
            needles += ["judge/flip_rate", "curate/kept_frac", "dpo/loss"]
        _wait_text(browser, *needles)
        _show(browser, "eval/accuracy")
        browser.save_screenshot(str(OUT / f"iteration-{t}-run.png"))


def test_the_report_opens_in_the_artifact_viewer_with_every_plot_drawn(ui):
    base, browser, client, exp, parent = ui
    browser.get(f"{base}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}/artifacts/report.html{ML}")
    _wait_text(browser, "report.html")
    frame = _wait_element(browser, "iframe")  # the artifact viewer shows an .html in a frame
    browser.save_screenshot(str(OUT / "report-in-artifact-viewer.png"))
    browser.switch_to.frame(frame)
    try:
        text = _wait_text(browser, "SRC iteration report", "Held-out metrics per iteration", "Iteration 1",
                          "Iteration 2", "Why curation dropped prompts", "What changed between evaluations")
        assert "kept:" in text and "weight" in text
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])")
        assert images and all(ok for _, ok in images), [a for a, ok in images if not ok]
        alts = [a for a, _ in images]
        assert "metrics per iteration" in alts
        assert len([a for a in alts if a.startswith("win probabilities of ")]) == 8
    finally:
        browser.switch_to.default_content()


def test_the_report_downloaded_opens_as_a_file_and_loads_nothing_from_outside(ui, tmp_path):
    base, browser, client, exp, parent = ui
    local = Path(client.download_artifacts(parent.info.run_id, "report.html", str(tmp_path)))
    browser.get(local.resolve().as_uri())
    _wait_text(browser, "SRC iteration report", "What changed between evaluations")
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    # the page fetched nothing (inline images are no fetches): no CDN, no web font, no script
    assert all(u.startswith("data:") for u in fetched), fetched
    width, height = browser.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    assert height > 2000  # the whole report: metrics, two iterations, the changes
    _full_page(browser, OUT / "report-full-page.png")
    assert (OUT / "report-full-page.png").stat().st_size > 50_000
