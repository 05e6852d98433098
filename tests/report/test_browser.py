"""The report in a real browser: Debian's chromium, headless, driven by Playwright."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import run_cli
from report_helpers import FAIL_POLICY, PASS_POLICY, copy_run, write_policy

CHROMIUM = os.environ.get("PRIVBENCH_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "reports" / "test-artifacts"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        # An optional system package: a developer's machine without it reports the browser test
        # as not run, with the install command; CI (CI=true, as .ci/run is run) requires it.
        message = (f"browser test not run: {CHROMIUM} not found; install it with "
                   "`sudo apt-get install -y chromium` (or set PRIVBENCH_CHROMIUM)")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + "; under CI it is required (.ci/run installs it)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900})
        yield context
        context.close()


def _open(context, html: Path):
    page = context.new_page()
    problems, requests = [], []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(html.as_uri(), wait_until="load")
    return page, problems, requests


@pytest.mark.parametrize(("policy", "verdict"), [(PASS_POLICY, "PASS"), (FAIL_POLICY, "FAIL")],
                         ids=["pass", "fail"])
def test_report_opens_offline_with_the_right_verdict_and_plots(browser, quick_run, tmp_path,
                                                               policy, verdict):
    run = copy_run(quick_run[0], tmp_path / "run")
    proc = run_cli("gate", "--policy", str(write_policy(tmp_path / "p.toml", policy)), str(run))
    assert proc.returncode == (0 if verdict == "PASS" else 1), proc.stdout + proc.stderr
    html = run / "index.html"
    page, problems, requests = _open(browser, html)
    assert problems == []
    assert requests == [html.as_uri()]  # the page itself, nothing else
    assert page.inner_text("#verdict-word").strip() == verdict
    plots = page.eval_on_selector_all(
        ".plot svg", "els => els.map(e => [e.getBoundingClientRect().width, "
                     "e.getBoundingClientRect().height, e.querySelectorAll('path').length])")
    assert len(plots) >= 3  # frontier, ROC, rounds
    # full-width plots and the per-cell ROC panels (360 px) all drawn, none collapsed
    assert all(w > 300 and h > 150 and paths > 10 for w, h, paths in plots), plots
    shot = tmp_path / f"report-{verdict.lower()}.png"  # the first screen, as opened
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 20_000
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / shot.name)
    # sorting works without a framework: click "claimed ε" twice, the ∞ row goes first
    header = page.locator("#scorecard th", has_text="claimed ε (PLD)")
    header.click()
    header.click()
    assert page.inner_text("#scorecard tbody tr:first-child td:first-child") == "epsilon=inf"
    page.emulate_media(media="print")
    pdf = page.pdf(path=str(tmp_path / "report.pdf"), format="A4")
    assert len(pdf) > 10_000
    page.close()
