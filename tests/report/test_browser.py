"""The HTML report in a real headless browser (Debian's chromium driven by selenium): it loads, its tables have rows,
every image decodes, and the console stays free of errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fake_records import make_record
from rnnlab.report.cli import main

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run")


@pytest.fixture
def browser(tmp_path):
    """A headless chromium with an empty profile; missing chromium fails under CI=true, else skips."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).exists() or shutil.which(p))]
    if missing:
        message = f"{', '.join(missing)} missing: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def severe(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_report_page_renders_in_chromium(tmp_path, browser):
    for model, params, base in (("lstm", 17473, 0.01), ("gru", 13121, 0.02), ("elman", 4417, 0.1)):
        for seed in range(3):
            run = tmp_path / "sweep" / f"{model}{seed}"
            make_record(run, model=model, seed=seed, params=params, step_ms=params / 4000 + seed,
                        metrics={"test/mse": base * (1 + 0.1 * seed), "val/loss": base, f"grad_ratio_{10}": base,
                                 "grad_ratio_50": base**2})
            (run / "csv").mkdir()
            (run / "csv" / "metrics.csv").write_text(
                "epoch,step,train/loss_step,val/loss\n"
                + "".join(f"0,{s},{1.0 / (s + 1) + base},\n" for s in range(5)) + f"0,4,,{base}\n")
    make_record(tmp_path / "sweep" / "gru9", model="gru", seed=9, status="failed")
    out = tmp_path / "out"
    assert main([str(tmp_path / "sweep"), "--out", str(out), "--baseline", "lstm"]) == 0

    # the console check itself works: an error on a page is seen
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>console.error('deliberate failure')</script></body></html>")
    browser.get(broken.as_uri())
    assert any("deliberate failure" in message for message in severe(browser))

    browser.get((out / "report.html").as_uri())
    assert browser.title == "rnnlab report"
    arm_rows = browser.execute_script("return document.querySelectorAll('table.arms tbody tr').length")
    assert arm_rows == 3
    claim_rows = browser.execute_script("return document.querySelectorAll('table.claims tbody tr').length")
    assert claim_rows >= 20
    for key in ("II", "III", "IV"):
        assert browser.execute_script(f"return document.querySelectorAll('table.survey-{key} tbody tr').length") > 3
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(images) >= 4  # learning curves, metric vs params, metric vs step time, gradient vs lag
    for alt, complete, width, height in images:
        assert complete and width > 0 and height > 0, alt
    assert severe(browser) == []
