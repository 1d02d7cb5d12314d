"""The status page in a real browser: Debian's headless Chromium driven by Selenium through
chromium-driver, against the real server on the demo repository under load, with iris-xgb's
version 2 as a 10 % canary (and a shadow).

Checks what a person would look at: both versions, the split and its generation, rates that
move, numbers that are the server's own JSON formatted, and that the tables are there with
JavaScript off; saves the screenshots the docs show (set ``STATUS_SCREENSHOTS=docs/guides/img``
to refresh them, else they go to the test's temporary folder).
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.protocol.rest.status import fmt_ms, fmt_rate, fmt_share
from tests.server_process import DEMO_REPO, ServerProcess, free_port, running_server

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None, reason="needs Debian's chromium and chromium-driver (scripts/test.sh)"
)

TOKEN = "status-page-test-token-0123456789"
IRIS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [6.3, 3.3, 6.0, 2.5], [5.9, 3.0, 5.1, 1.8]]


def infer_body(rows: list[list[float]]) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [len(rows), 4], "data": rows}]}


class Load(threading.Thread):
    """Paced requests to iris-xgb (~60/s; one in 40 has a wrong shape: a 400 the page counts
    as an error of the version it was routed to)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.sent = url, threading.Event(), 0

    def run(self) -> None:
        pace = 1 / 60
        rng = random.Random(30)
        with httpx.Client(base_url=self.url, timeout=5) as client:
            next_at = time.monotonic()
            while not self.stop.is_set():
                bad = self.sent % 40 == 39
                rows = [[5.1, 3.5, 1.4]] if bad else [rng.choice(IRIS)]
                body = infer_body(rows)
                if bad:
                    body["inputs"][0]["shape"] = [1, 3]
                client.post("/v2/models/iris-xgb/infer", json=body)
                if self.sent % 4 == 0:  # a second model with traffic on the overview
                    features = [round(rng.uniform(0, 30), 2) for _ in range(30)]
                    cancer = {
                        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": features}]
                    }
                    client.post("/v2/models/cancer-xgb/infer", json=cancer)
                self.sent += 1
                next_at += pace * rng.uniform(0.5, 1.5)
                time.sleep(max(0.0, next_at - time.monotonic()))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    admin = free_port()
    env = {"SERVING_ADMIN_PORT": str(admin), "SERVING_ADMIN_TOKEN": TOKEN}
    with running_server(DEMO_REPO, tmp_path_factory.mktemp("status"), grpc=False, env=env) as server:
        yield server, f"http://127.0.0.1:{admin}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"status-chromium-{os.getpid()}"
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
        "--window-size=1280,900", "--force-device-scale-factor=1",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(condition: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def screenshots() -> Path | None:
    where = os.environ.get("STATUS_SCREENSHOTS")
    return Path(where) if where else None


def shoot(driver: Any, path: Path, width: int) -> None:
    """A screenshot of the whole page at ``width`` CSS pixels (the viewport set to the page's
    height through the DevTools protocol, so nothing is cut)."""
    driver.set_window_size(width, 900)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    metrics = {"width": width, "height": int(height), "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        assert driver.save_screenshot(str(path)), path
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


# Everything shown for iris-xgb's versions and the JSON the page rendered it from, read in one
# script run (so no poll lands between the two reads).
READ_PAGE = """
const doc = window.statusData;
const sec = document.querySelector('section[data-model="iris-xgb"]');
const rows = {};
sec.querySelectorAll('tr[data-version]').forEach(function (tr) {
  const cells = {};
  tr.querySelectorAll('[data-f]').forEach(function (el) { cells[el.dataset.f] = el.textContent.trim(); });
  cells.vertices = (tr.querySelector('svg[data-chart="rate"] path').getAttribute('d').match(/[ML]/g) || []).length;
  rows[tr.dataset.version] = cells;
});
const model = {};
sec.querySelectorAll('[data-m]').forEach(function (el) { model[el.dataset.m] = el.textContent.trim(); });
return {doc: doc, rows: rows, model: model, renders: window.statusRenders};
"""


def test_status_page_under_a_canary_in_chromium(
    server: tuple[ServerProcess, str], browser: Any, tmp_path: Path
) -> None:
    public, admin = server
    # Off on the public port unless SERVING_STATUS_PAGE is set; on the admin port.
    assert httpx.get(f"{public.url}/status").status_code == 404
    assert httpx.get(f"{public.url}/status/data").status_code == 404
    put = httpx.put(
        f"{admin}/v2/models/iris-xgb/traffic",
        headers={"authorization": f"Bearer {TOKEN}"},
        json={
            "weights": {"1": 90, "2": 10},
            "shadow_version": "2",
            "shadow_fraction": 0.2,
            "shadow_tolerance": 0.17,  # the demo's v2 is sharper: about half its answers agree
        },
    )
    assert put.status_code == 200, put.text
    load = Load(public.url)
    load.start()
    try:
        browser.get(f"{admin}/status")
        wait_for(lambda: browser.execute_script("return window.statusRenders >= 1"), what="the first poll")
        page = browser.execute_script(READ_PAGE)
        rows, doc = page["rows"], page["doc"]
        assert {"1", "2"} <= set(rows), rows
        assert page["model"]["split"] == "v1 90.0 % / v2 10.0 %"
        assert rows["1"]["role"] == "stable" and rows["2"]["role"] == "canary + shadow"
        assert rows["1"]["state"] == rows["2"]["state"] == "✓ READY"

        # What the page shows is the JSON it polled, formatted; that JSON is the server's.
        def shown_matches(page: dict[str, Any]) -> None:
            model = next(m for m in page["doc"]["models"] if m["name"] == "iris-xgb")
            for v in model["versions"]:
                t, cells = v["traffic"], page["rows"][v["version"]]
                assert cells["share"] == fmt_share(v["share"])
                assert cells["rate"] == fmt_rate(t["rate"] if t else None)
                assert cells["error_share"].lstrip("⚠ ") == fmt_share(t["error_share"] if t else None)
                assert cells["p50_ms"] == fmt_ms(t["p50_ms"] if t else None)
                assert cells["p99_ms"] == fmt_ms(t["p99_ms"] if t else None)
                assert cells["vertices"] == sum(p["rate"] is not None for p in (t["points"] if t else []))
            assert page["model"]["generation"] == str(model["generation"])
            assert page["model"]["rate"] == fmt_rate(model["totals"]["rate"])

        shown_matches(page)
        own = httpx.get(f"{admin}/status/data").json()
        iris = next(m for m in own["models"] if m["name"] == "iris-xgb")
        shown = next(m for m in doc["models"] if m["name"] == "iris-xgb")
        assert shown["split"] == iris["split"] == {"1": 0.9, "2": 0.1}
        assert shown["generation"] == iris["generation"] == 1
        assert [v["state"] for v in shown["versions"]] == [v["state"] for v in iris["versions"]]

        # Rates move: the page's numbers change between polls while the load runs, and the
        # canary gets about a tenth of the routed traffic over the 10 s window.
        seen: set[str] = set()

        def moving() -> bool:
            now = browser.execute_script(READ_PAGE)
            shown_matches(now)
            seen.add(now["rows"]["1"]["rate"])
            return len(seen - {fmt_rate(0.0)}) >= 3

        wait_for(moving, timeout=20, what=f"the stable rate to change (seen {seen})")

        def canary_share_settled() -> bool:
            data = httpx.get(f"{admin}/status/data?model=iris-xgb").json()["models"][0]
            by = {v["version"]: v["traffic"] for v in data["versions"]}
            stable: int = by["1"]["requests"]
            canary: int = by["2"]["requests"]
            return stable + canary > 200 and 0.03 < canary / (stable + canary) < 0.2

        wait_for(canary_share_settled, timeout=15, what="a canary share near 10 %")
        final = browser.execute_script(READ_PAGE)
        shown_matches(final)
        assert final["renders"] > page["renders"]
        assert "⚠" in final["rows"]["1"]["error_share"] + final["rows"]["2"]["error_share"]  # 1 in 40 bad

        out = screenshots() or tmp_path
        out.mkdir(parents=True, exist_ok=True)
        if screenshots() is not None:  # refreshing the docs' pictures: a minute of history in the charts

            def history() -> bool:
                data = httpx.get(f"{admin}/status/data?model=iris-xgb").json()["models"][0]
                points: list[dict[str, float]] = data["versions"][0]["traffic"]["points"]
                return sum(p["rate"] > 0 for p in points) >= 30

            wait_for(history, timeout=120, what="a minute of history")
            browser.refresh()
            wait_for(lambda: browser.execute_script("return window.statusRenders >= 2"), what="a refresh")
        shoot(browser, out / "status-overview.png", 1280)

        browser.get(f"{admin}/status/models/iris-xgb")
        wait_for(lambda: browser.execute_script("return window.statusRenders >= 1"), what="the model page")
        cards = browser.find_elements(By.CSS_SELECTOR, "article.card")
        assert [c.get_attribute("data-version") for c in cards] == ["1", "2"]
        assert "agreement" in browser.find_element(By.CSS_SELECTOR, "ul.shadow").text
        stage = cards[0].find_element(By.CSS_SELECTOR, '[data-f="compute_ms"]').text
        assert stage.endswith(" ms"), stage
        shoot(browser, out / "status-model.png", 1100)

        # Phone width: nothing wider than the screen, every figure still labelled.
        browser.set_window_size(390, 844)
        browser.get(f"{admin}/status")
        wait_for(lambda: browser.execute_script("return window.statusRenders >= 1"), what="the phone view")
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page is {overflow} px wider than a phone"
        browser.execute_script(
            "window.scrollTo(0, document.querySelector('[data-model=\"iris-xgb\"]').offsetTop)"
        )
        assert browser.save_screenshot(str(out / "status-phone.png"))

        # Without JavaScript the server-rendered tables are all there is, and they are complete.
        browser.set_window_size(1280, 900)
        browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
        try:
            browser.get(f"{admin}/status")
            rows = browser.find_elements(By.CSS_SELECTOR, 'section[data-model="iris-xgb"] tr[data-version]')
            assert [r.get_attribute("data-version") for r in rows][:2] == ["1", "2"]
            live = browser.find_element(By.CSS_SELECTOR, '[data-process="live"]').text
            assert "static" in live  # the script never ran
            rate = rows[0].find_element(By.CSS_SELECTOR, '[data-f="rate"]').text
            assert rate.endswith("/s") and rate != fmt_rate(0.0), rate
        finally:
            browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})
    finally:
        load.stop.set()
        load.join(timeout=10)
