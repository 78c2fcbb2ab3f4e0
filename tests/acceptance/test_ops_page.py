"""The operator page (``GET /ops``) in a real headless Chromium (Debian's ``chromium`` driven by selenium
through Debian's ``chromium-driver``; ``make test`` installs both), against ``run.py serve`` in a subprocess.

* a test tree in which an actor crashes another through the kernel (``ActorSystem.inject_crash``) when the
  test asks (a trigger file beside the database, looked at every 20 ms): the page shows the tree, and the
  crash on it within a second, from the telemetry stream;
* the whole application over a SQLite file seeded with two dead outbox events: the replay and discard
  buttons work; a wrong token is refused with an error and nothing of the dashboard shows.

Each browser session is synchronous (WebDriver over HTTP) and runs in a worker thread (``trio.to_thread``);
every wait in it is bounded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from kernel import Actor, ChildSpec, Supervisor
from storage import CheckpointIn, open_store
from tests.ingest_helpers import OPS_TOKEN, running_server

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 10.0
TRIGGER = "crash-now"
LOOK_EVERY = 0.02


# -- a tree with a crash the test injects ---------------------------------------------------------------
class Victim(Actor):
    """An actor with nothing wrong with it: the crash comes from outside, through the kernel."""

    async def receive(self, msg: Any) -> None:
        return None


class Injector(Actor):
    """Crashes ``root/victim`` through the kernel (``ActorSystem.inject_crash``) as soon as the trigger file
    exists; it removes the file first, so one trigger is one crash. Looks every 20 ms."""

    def __init__(self, trigger: str) -> None:
        self.trigger = Path(trigger)

    async def started(self) -> None:
        self.send_after(LOOK_EVERY, "look")

    async def receive(self, msg: Any) -> None:
        if self.trigger.exists():
            self.trigger.unlink()
            self.system.inject_crash("root/victim", RuntimeError("crash injected by test_ops_page"))
        self.send_after(LOOK_EVERY, "look")


def crash_on_demand_tree(settings: Any) -> Supervisor:
    """``--tree`` factory: the trigger lives beside the (unused) database file the test names."""
    trigger = Path(settings.database_url.removeprefix("sqlite:///")).parent / TRIGGER
    return Supervisor("root", strategy="one_for_one", max_restarts=100, within=60.0, children=[
        ChildSpec("victim", Victim), ChildSpec("injector", Injector, args=(str(trigger),))])


# -- the browser ------------------------------------------------------------------------------------------
@contextmanager
def chromium(*, expected: tuple[str, ...] = ()) -> Iterator[WebDriver]:
    """Headless Chromium; on the way out, no error in its console but those ``expected`` (substrings)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            pytest.fail(f"{path} is missing: `make test` installs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--window-size=1280,1000", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    if os.geteuid() == 0:  # root (as here and in CI) cannot use Chromium's sandbox
        options.add_argument("--no-sandbox")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        unexpected = [e for e in severe if not any(part in e["message"] for part in expected)]
        assert unexpected == [], unexpected
    finally:
        driver.quit()


def until(driver: WebDriver, check: Callable[[WebDriver], Any], what: str, timeout: float = WAIT) -> Any:
    try:
        # The page re-renders the tree on every telemetry event: an element found a moment ago may be gone.
        return WebDriverWait(driver, timeout, poll_frequency=0.01,
                             ignored_exceptions=(StaleElementReferenceException,)).until(check, message=what)
    except TimeoutException:
        pytest.fail(f"waited {timeout} s for {what}; the page's status: {text_of(driver, '#status')!r}, its "
                    f"dead-letter status: {text_of(driver, '#dead-letters-status')!r}, login error: "
                    f"{text_of(driver, '#login-error')!r}")


def one(driver: WebDriver, css: str) -> WebElement | bool:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found else False


def text_of(driver: WebDriver, css: str) -> str:
    for _ in range(5):  # re-rendered between the find and the read: find it again
        found = driver.find_elements(By.CSS_SELECTOR, css)
        try:
            return found[0].text if found else ""
        except StaleElementReferenceException:
            continue
    return ""


def log_in(driver: WebDriver, base: str, token: str) -> None:
    driver.get(f"{base}/ops")
    form = until(driver, lambda d: one(d, "#login-form"), "the login form")
    assert form.is_displayed()
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "login-button").click()


# -- tests ------------------------------------------------------------------------------------------------
async def test_the_tree_shows_and_an_injected_crash_appears_within_a_second(tmp_path: Path) -> None:
    async with running_server(tmp_path, "--tree", "tests.acceptance.test_ops_page:crash_on_demand_tree",
                              "--decode-processes", "0") as server:
        await trio.to_thread.run_sync(_watch_a_crash, server.base, tmp_path)
        assert await server.terminate() == 0


def _watch_a_crash(base: str, tmp_path: Path) -> None:
    victim = '#tree li[data-path="root/victim"]'
    # The tree has no application: the page finds no outbox (404) once and says so.
    with chromium(expected=("/v1/ops/outbox/dead-letters?limit=100 - Failed to load resource: the server "
                            "responded with a status of 404",)) as driver:
        log_in(driver, base, OPS_TOKEN)
        until(driver, lambda d: one(d, f'{victim}[data-restarts="0"]'), "the tree with the victim")
        until(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#tree > li").get_attribute("data-path") == "root",
              "the root at the top of the tree")
        until(driver, lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "live",
              "the telemetry stream open")
        assert driver.find_element(By.ID, "app").is_displayed()
        assert not driver.find_element(By.ID, "login").is_displayed()

        started = time.monotonic()
        (tmp_path / TRIGGER).touch()
        until(driver, lambda d: one(d, f'{victim}[data-restarts="1"]'), "the crash on the page", timeout=1.0)
        elapsed = time.monotonic() - started
        assert elapsed < 1.0, f"the crash took {elapsed:.3f} s to appear"
        failure = text_of(driver, f"{victim} > .node .last-failure")
        assert failure == "RuntimeError: crash injected by test_ops_page"
        assert "root/victim" in text_of(driver, '#events li[data-kind="crashed"]')

        # The charts fill from the summary's points (one a second); the restart is on the restarts chart.
        until(driver, lambda d: int(d.find_element(By.ID, "chart-restarts").get_attribute("data-points") or 0) >= 2,
              "chart points")
        until(driver, lambda d: d.find_element(By.ID, "chart-restarts").get_attribute("data-max") == "1",
              "the restart on the restarts chart")
        until(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#chart-rate polyline").get_attribute("points"),
              "the request-rate line")
        # No application behind this tree: the page says so instead of failing.
        until(driver, lambda d: text_of(d, "#dead-letters-status") == "no outbox in this process", "no outbox")

        # The token stays for the tab's session: a reload opens the dashboard without asking again.
        driver.refresh()
        until(driver, lambda d: one(d, f'{victim}[data-restarts="1"]'), "the tree after a reload")


async def _seed_dead_letters(db: Path, user: str) -> tuple[int, int]:
    """Before the server opens the database: an outbox event its dispatch gave up on, and an event whose
    daily-rollups checkpoint gave up (a poison event), each as the workers would have left it."""
    async with open_store(f"sqlite:///{db}") as store, store.transaction() as tx:
        ids = []
        for i in range(2):
            mark = await tx.watermarks.bump(user, 1)
            event = await tx.outbox.enqueue(user, "health.samples.changed", {
                "requestId": f"seed-{i}", "lane": "hot", "changes": 1, "watermark": {"from": mark - 1, "to": mark},
                "keys": [{"metric": "heart_rate", "date": "2026-11-24"}]}, correlation_id=f"seed-{i}")
            ids.append((event.id, mark))
        (undispatched, _), (dispatched, mark) = ids
        assert {e.id for e in await tx.outbox.claim("seeder", limit=2)} == {undispatched, dispatched}
        assert await tx.outbox.fail(undispatched, "seeder", "poison for the ops page", retryable=False) == "dead"
        await tx.outbox.complete(dispatched, "seeder")
        (leased,) = await tx.checkpoints.create_many([CheckpointIn(
            event_id=dispatched, handler="daily_rollups", user_id=user, event_type="health.samples.changed",
            wm_from=mark - 1, wm_to=mark)], owner="seeder")
        assert await tx.checkpoints.fail(leased.key, "seeder", "poison for the ops page", retryable=False) == "dead"
    return undispatched, dispatched


async def test_dead_letters_replay_and_discard_and_a_wrong_token_is_refused(tmp_path: Path) -> None:
    replayed, discarded = await _seed_dead_letters(tmp_path / "v.db", "ops-page-user")
    async with running_server(tmp_path, "--decode-processes", "0") as server:
        await trio.to_thread.run_sync(_use_the_buttons, server.base, replayed, discarded)
        # What the buttons did, seen in the database: the replayed event runs again, the discarded work is gone.
        assert server.db.scalar("SELECT status FROM outbox_events WHERE id = ?", replayed) != "dead"
        assert server.db.scalar("SELECT count(*) FROM projection_checkpoints WHERE event_id = ? AND status = 'dead'",
                                discarded) == 0
        assert await server.terminate() == 0


def _use_the_buttons(base: str, replayed: int, discarded: int) -> None:
    with chromium(expected=("/v1/ops/supervision - Failed to load resource: the server responded with a status "
                            "of 401",)) as driver:
        log_in(driver, base, "not-the-operator-token")
        until(driver, lambda d: text_of(d, "#login-error") == "The operator token was refused.", "the refusal")
        assert not driver.find_element(By.ID, "app").is_displayed()
        assert driver.execute_script("return sessionStorage.getItem('vigil.opsToken')") is None

        log_in(driver, base, OPS_TOKEN)
        rows = "#dead-letters tbody tr"
        until(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == 2, "two dead letters")
        assert "poison for the ops page" in text_of(driver, f'#dead-letters tr[data-id="{replayed}"]')
        until(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#lanes tbody tr")) == 3, "hot, cold, change")
        until(driver, lambda d: text_of(d, '#pool dd[data-name="max"]') == "2", "the SQLite pool")
        until(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#tree > li").get_attribute("data-path") == "root",
              "the root at the top of the tree")

        driver.find_element(By.CSS_SELECTOR, f'#dead-letters button.replay[data-id="{replayed}"]').click()
        until(driver, lambda d: text_of(d, "#dead-letters-status") == f"Replayed event {replayed}", "replayed")
        until(driver, lambda d: not one(d, f'#dead-letters tr[data-id="{replayed}"]'), "the replayed row gone")

        driver.find_element(By.CSS_SELECTOR, f'#dead-letters button.discard[data-id="{discarded}"]').click()
        until(driver, expected_conditions.alert_is_present(), "the confirmation").accept()
        until(driver, lambda d: text_of(d, "#dead-letters-status") == f"Discarded event {discarded}", "discarded")
        until(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, rows), "no dead letters left")


async def test_the_page_and_its_assets_are_served_with_a_strict_policy(tmp_path: Path) -> None:
    import httpx

    async with running_server(tmp_path, "--decode-processes", "0") as server, \
            httpx.AsyncClient(base_url=server.base) as client:
        page = await client.get("/ops")
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert '<script src="/ops/assets/ops.js"' in page.text
        script = await client.get("/ops/assets/ops.js")
        assert script.status_code == 200 and script.headers["Content-Type"].startswith("text/javascript")
        missing = await client.get("/ops/assets/../_ops_page.py")
        assert missing.status_code == 404
        unknown = await client.get("/ops/assets/ops.html")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"
        refused = await client.get("/v1/ops/summary")
        assert refused.status_code == 401
        assert await server.terminate() == 0
