"""The dashboard in a real headless browser (Debian's chromium and chromium-driver, driven by Selenium): every page,
filtering and paging, retry and cancel through the UI, pause/resume against a real worker process, XSS, CSRF,
read-only, Basic auth and the mounted app. Writes the README's screenshots to docs/."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

pytest.importorskip("starlette", reason="the dashboard extra is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (dev extra)")

from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

from pgqueue.dashboard import app as dashboard_app  # noqa: E402
from pgqueue.dashboard import create_app  # noqa: E402
from tests.apps.jobs_app import RESULTS_DDL  # noqa: E402
from tests.integration.dashboard_support import insert_job, live_server, populate  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason=f"no {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver; .ci/run does)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="pgqueue-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1360,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def site(dsn: str, browser: WebDriver) -> Iterator[str]:
    browser.delete_all_cookies()
    with live_server(create_app(dsn)) as base:
        yield base


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except StaleElementReferenceException:  # the overview's refresh replaced the element meanwhile
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout} s")


def screenshot(browser: WebDriver, name: str) -> None:
    """The whole page, as the README shows it."""
    height, chrome = browser.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]"
    )
    browser.set_window_size(1360, min(max(900, height), 2400) + chrome)
    DOCS.mkdir(exist_ok=True)
    browser.save_screenshot(str(DOCS / name))
    browser.set_window_size(1360, 900)


def status_of(db: psycopg.Connection, job_id: int) -> str:
    return db.execute("SELECT status FROM pgqueue.jobs WHERE id = %s", (job_id,)).fetchone()[0]


def click(browser: WebDriver, selector: str) -> None:
    for _ in range(5):  # the overview's refresh may replace the element between finding and clicking it
        try:
            browser.find_element(By.CSS_SELECTOR, selector).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.1)
    raise AssertionError(f"{selector} kept going stale")


def test_every_page_filter_page_through_and_screenshots(
    site: str, browser: WebDriver, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = populate(db)
    browser.get(site + "/")
    assert browser.title.startswith("Overview")
    assert "reports" in browser.find_element(By.CSS_SELECTOR, "table.queues").text
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar-completed")
    screenshot(browser, "dashboard-overview.png")

    browser.find_element(By.LINK_TEXT, "Jobs").click()
    Select(browser.find_element(By.NAME, "status")).select_by_visible_text("completed")
    browser.find_element(By.NAME, "queue").send_keys("emails")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait_for(lambda: "status=completed" in browser.current_url, what="filtered list")
    first = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "a.job-link")]
    assert len(first) == 50
    statuses = {e.text for e in browser.find_elements(By.CSS_SELECTOR, "table.jobs .status")}
    assert statuses == {"completed"}
    click(browser, "a[rel=next]")
    wait_for(lambda: "cursor=" in browser.current_url, what="second page")
    second = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "a.job-link")]
    assert len(second) == 50 and int(second[0]) < int(first[-1]) and not set(first) & set(second)

    browser.get(site + "/jobs?queue=default&limit=25")
    screenshot(browser, "dashboard-jobs.png")
    browser.get(site + "/jobs?status=failed")
    browser.find_element(By.LINK_TEXT, str(ids["failed"])).click()
    wait_for(lambda: browser.current_url.endswith(f"/jobs/{ids['failed']}"), what="job page")
    assert "invoice-42" in browser.page_source
    assert len(browser.find_elements(By.CSS_SELECTOR, "article.attempt")) == 3
    screenshot(browser, "dashboard-job.png")

    browser.get(site + "/schedules")
    assert "previous job 17 still running" in browser.find_element(By.TAG_NAME, "body").text


def test_retry_and_cancel_through_the_ui(site: str, browser: WebDriver, db: psycopg.Connection) -> None:
    failed = insert_job(db, queue="billing", status="failed", attempts=3, max_attempts=3, finished_at=None)
    pending = insert_job(db, queue="billing")
    browser.get(f"{site}/jobs/{failed}")
    click(browser, "button[data-action=retry]")
    wait_for(lambda: "done=retried" in browser.current_url, what="retried")
    assert "sent back to pending" in browser.find_element(By.CSS_SELECTOR, ".notice").text
    assert db.execute("SELECT status, attempts FROM pgqueue.jobs WHERE id = %s", (failed,)).fetchone() == ("pending", 0)
    browser.get(f"{site}/jobs/{pending}")
    click(browser, "button[data-action=cancel]")
    wait_for(lambda: "done=cancelled" in browser.current_url, what="cancelled")
    assert status_of(db, pending) == "cancelled"

    # Bulk: the filter, the count, then the confirmation.
    for n in range(4):
        insert_job(db, queue="bulk", task="sync", args={"n": n})
    browser.get(f"{site}/jobs?queue=bulk")
    click(browser, "a[data-bulk=cancel]")
    assert browser.find_element(By.CSS_SELECTOR, "[data-count=pending]").text == "4"
    click(browser, "button[data-action=confirm]")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "[data-done]"), what="bulk done")
    assert browser.find_element(By.CSS_SELECTOR, "[data-done]").get_attribute("data-done") == "4"
    assert db.execute("SELECT count(*) FROM pgqueue.jobs WHERE queue = 'bulk' AND status = 'cancelled'").fetchone() == (
        4,
    )


def test_csrf_refusal_in_the_browser(site: str, browser: WebDriver, db: psycopg.Connection) -> None:
    job = insert_job(db)
    browser.get(f"{site}/jobs/{job}")
    browser.execute_script("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())")
    click(browser, "button[data-action=cancel]")
    wait_for(lambda: "Refused" in browser.title, what="refusal page")
    assert "security token" in browser.find_element(By.CSS_SELECTOR, ".message").text
    assert status_of(db, job) == "pending"


def test_job_content_never_runs(site: str, browser: WebDriver, db: psycopg.Connection) -> None:
    job = insert_job(
        db,
        queue="<img src=x onerror=window.__pwned=1>",
        task="<script>window.__pwned=2</script>",
        args={"html": "<script>window.__pwned=3</script>", "img": "<img src=x onerror=window.__pwned=4>"},
        status="failed",
        error="<svg onload=window.__pwned=5>",
        finished_at=None,
    )
    for path in (f"/jobs/{job}", "/jobs", "/"):
        browser.get(site + path)
        assert browser.execute_script("return window.__pwned === undefined")
        assert not browser.find_elements(By.CSS_SELECTOR, "main img, main script")
    browser.get(f"{site}/jobs/{job}")
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "<script>window.__pwned=2</script>" in text and "<script>window.__pwned=3</script>" in text


def test_overview_refreshes_by_itself(
    site: str, browser: WebDriver, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard_app, "REFRESH_SECONDS", 1)
    insert_job(db, queue="live")
    browser.get(site + "/")
    cell = "table.queues tbody tr td:nth-child(3)"
    assert browser.find_element(By.CSS_SELECTOR, cell).text == "1"
    db.execute("INSERT INTO pgqueue.jobs (queue, task) SELECT 'live', 't' FROM generate_series(1, 41)")
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, cell).text == "42", timeout=10, what="refreshed count")


def test_pause_stops_a_real_worker_and_resume_wakes_it(
    site: str, browser: WebDriver, dsn: str, db: psycopg.Connection
) -> None:
    db.execute(RESULTS_DDL)
    env = {**os.environ, "PGQUEUE_DSN": dsn}
    worker = subprocess.Popen(
        [PGQUEUE, "work", "--app", "tests.apps.jobs_app", "--concurrency", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first = insert_job(db, task="record", args={"n": 1})
        wait_for(lambda: status_of(db, first) == "completed", timeout=30, what="the worker runs a job")
        browser.get(site + "/")
        # The worker's own registry row, as it wrote it when it started.
        assert str(worker.pid) in "".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, "tr.worker-alive"))
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "button[data-action=pause]"), what="pause button")
        click(browser, "button[data-action=pause]")
        wait_for(lambda: "done=paused" in browser.current_url, what="paused")
        assert db.execute("SELECT paused FROM pgqueue.queues WHERE name = 'default'").fetchone() == (True,)
        held = insert_job(db, task="record", args={"n": 2})
        time.sleep(1.5)
        assert status_of(db, held) == "pending"  # the claim skips the paused queue
        browser.get(site + "/")
        click(browser, "button[data-action=resume]")
        resumed_at = time.monotonic()
        wait_for(lambda: status_of(db, held) == "completed", timeout=10, what="the job runs after resume")
        assert time.monotonic() - resumed_at < 5  # woken by the notification, not the 30 s poll
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    browser.get(site + "/")  # a clean stop is marked in the registry: shown as stopped, not as dead
    assert str(worker.pid) in "".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, "tr.worker-stopped"))


def test_read_only_mode_shows_no_actions(dsn: str, browser: WebDriver, db: psycopg.Connection) -> None:
    failed = insert_job(db, status="failed", finished_at=None)
    with live_server(create_app(dsn, read_only=True)) as base:
        for path in ("/", "/jobs", f"/jobs/{failed}"):
            browser.get(base + path)
            assert not browser.find_elements(By.CSS_SELECTOR, "form[method=post], [data-bulk]")
        assert browser.find_element(By.CSS_SELECTOR, ".badge-readonly").text == "read-only"


def test_basic_auth_in_the_browser(dsn: str, browser: WebDriver) -> None:
    with live_server(create_app(dsn, auth="ops:pa55word")) as base:
        browser.get(base + "/")  # 401: headless Chromium shows its (empty) credentials prompt, not the page
        assert not browser.title.startswith("Overview") and "Queues" not in browser.page_source
        browser.get(base.replace("http://", "http://ops:pa55word@") + "/")
        assert browser.title.startswith("Overview")


def test_mounted_app_under_a_prefix(dsn: str, browser: WebDriver, db: psycopg.Connection) -> None:
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Mount, Route

    failed = insert_job(db, status="failed", finished_at=None)
    host = Starlette(
        routes=[
            Route("/", lambda request: HTMLResponse('<a id="admin" href="/admin/queue/">queue admin</a>')),
            Mount("/admin/queue", create_app(dsn)),
        ]
    )
    browser.delete_all_cookies()
    with live_server(host) as base:
        browser.get(base + "/")
        click(browser, "#admin")
        wait_for(lambda: browser.title.startswith("Overview"), what="mounted overview")
        assert browser.execute_script("return getComputedStyle(document.body).backgroundColor") != "rgba(0, 0, 0, 0)"
        browser.find_element(By.LINK_TEXT, "Jobs").click()
        assert re.search(r"/admin/queue/jobs$", browser.current_url)
        browser.find_element(By.LINK_TEXT, str(failed)).click()
        click(browser, "button[data-action=retry]")
        wait_for(lambda: "done=retried" in browser.current_url, what="retried under the prefix")
        assert f"/admin/queue/jobs/{failed}" in browser.current_url
    assert status_of(db, failed) == "pending"
