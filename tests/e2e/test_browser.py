"""The UI as a person uses it: headless Chromium (Debian's chromium + chromedriver, installed by
`make test`) against the session's real Airflow stack (the same `stack` as the REST API test).

Log in, add an `ews` connection through the connection form (its extra fields are the
provider's conn-fields), press Test on the list page and read both parts of the report on two
lines, trigger the connection's DAG from its page and watch the run succeed. Screenshots of
every step are kept in test-artifacts/browser/ (the path is printed).
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import psycopg2
import pytest

from tests.e2e.conftest import wait_for
from tests.ewssim import EwsSimulator
from tools.stack import ADMIN_USER, FIXTURE, REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = REPO / "test-artifacts" / "browser"
CONN_ID = "ews_browser"
DAG_ID = f"ewssync__{CONN_ID}"
# A mailbox and app user of this test alone: no other connection of the stack syncs them
# (a second connection of the same mailbox for the same app user is refused at check time).
MAILBOX, APP_USER, PASSWORD = "browser@example.com", "browser", "Br0wser-Pa55"
STEPS = ("check", "extract", "transform", "load", "push", "report")


class Screenshots:
    """Numbered screenshots of one test in ARTIFACTS."""

    def __init__(self, driver, folder: Path):
        self.driver, self.folder, self.count = driver, folder, 0

    def take(self, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        return path


@pytest.fixture
def browser(capsys, tmp_path):
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: `make test` installs them (tools/install-browser.sh); "
            "or run apt-get install chromium chromium-driver as root"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(argument)
    service = Service(str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(120)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    shots = Screenshots(driver, ARTIFACTS)
    try:
        yield driver, shots
    finally:
        # where the test stopped (on a failure: what the page showed)
        shots.take("last")
        (ARTIFACTS / "last.html").write_text(driver.page_source, encoding="utf-8")
        driver.quit()
        with capsys.disabled():
            print(f"\nbrowser test screenshots: {ARTIFACTS}")


@pytest.fixture
def own_mailbox(stack, api):
    """A simulator of this test with its own mailbox (the realistic fixture), and its app user."""
    simulator = EwsSimulator()
    simulator.add_mailbox(MAILBOX, password=PASSWORD)
    simulator.load_fixture(FIXTURE, shift_to=datetime.now(UTC).date(), default_mailbox=MAILBOX)
    simulator.start()
    with psycopg2.connect(stack.calendar_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO calendar.users (login, email, display_name) VALUES (%s, %s, %s) "
            "ON CONFLICT (login) DO NOTHING",
            (APP_USER, MAILBOX, "Browser Test"),
        )
    try:
        yield simulator
    finally:
        api.request("DELETE", f"/connections/{CONN_ID}")
        simulator.stop()


def test_add_test_and_run_a_connection_in_the_browser(stack, api, browser, own_mailbox):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    # the UI re-renders while it polls the API: an element found a moment ago may be replaced
    # before it is read; the wait then simply looks again
    rerendered = (StaleElementReferenceException,)

    driver, shots = browser
    wait = WebDriverWait(driver, 60, ignored_exceptions=rerendered)

    def css(selector: str, root=None):
        return (root or driver).find_element(By.CSS_SELECTOR, selector)

    def type_into(element, text: str) -> None:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        element.click()
        element.send_keys(Keys.CONTROL, "a")  # replace a default (React sees every key)
        element.send_keys(text)

    # 1. log in (Airflow's simple auth manager's login page)
    driver.get(f"{stack.api_url}/")
    wait.until(lambda d: d.find_elements(By.NAME, "username"))
    shots.take("login")
    css("input[name=username]").send_keys(ADMIN_USER)
    css("input[name=password]").send_keys(stack.admin_password)
    css("button[type=submit]").click()
    wait.until(lambda d: "/auth/login" not in d.current_url)

    # 2. Admin > Connections > Add Connection: the `ews` form with the provider's fields
    driver.get(f"{stack.api_url}/connections")
    wait.until(
        lambda d: d.find_element(By.XPATH, "//button[contains(., 'Add Connection')]")
    ).click()
    form = wait.until(
        lambda d: d.find_element(
            By.XPATH,
            "//*[@data-scope='dialog'][@data-part='content'][.//input[@name='connection_id']]",
        )
    )
    css("input[name=connection_id]", form).send_keys(CONN_ID)
    kind = css("input[role=combobox]", form)
    kind.send_keys("Exchange calendar")
    wait.until(
        lambda d: d.find_element(
            By.XPATH, "//*[@role='option'][normalize-space()='Exchange calendar (EWS)']"
        )
    ).click()
    host = wait.until(lambda d: css("input[name=host]", form))
    assert host.get_attribute("placeholder").startswith("outlook.office365.com")  # relabelled
    type_into(host, own_mailbox.url)
    type_into(css("input[name=login]", form), MAILBOX)
    type_into(css("input[name=password]", form), PASSWORD)
    extra = form.find_element(
        By.XPATH, ".//button[@data-part='item-trigger'][contains(., 'Extra Fields')]"
    )
    if extra.get_attribute("aria-expanded") != "true":
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", extra)
        extra.click()
    app_user = wait.until(lambda d: css("input[name=element_app_user]", form))
    type_into(css("input[name=element_mailbox]", form), MAILBOX)
    # the zone is a select of the zones SyncSettings accepts: a made-up one is not offered
    zone = form.find_element(
        By.XPATH,
        ".//input[@name='element_exchange_timezone']/ancestor::div[.//input[@role='combobox']][1]"
        "//input[@role='combobox']",
    )
    type_into(zone, "Mars/Olympus")
    assert not form.find_elements(By.XPATH, "//*[@role='option']")
    type_into(zone, "W. Europe Standard Time")
    wait.until(
        lambda d: d.find_element(
            By.XPATH, "//*[@role='option'][normalize-space()='W. Europe Standard Time']"
        )
    ).click()
    type_into(css("input[name=element_schedule]", form), "none")  # runs only when triggered
    save = form.find_element(By.XPATH, ".//button[normalize-space()='Save']")
    # the app user is required: Save stays disabled while it is empty
    assert form.find_elements(By.XPATH, ".//*[normalize-space()='This field is required']")
    assert not save.is_enabled()
    type_into(app_user, APP_USER)
    shots.take("connection-form")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", save)
    wait.until(lambda d: save.is_enabled())
    save.click()
    row = wait.until(lambda d: d.find_element(By.XPATH, f"//tr[td[normalize-space()='{CONN_ID}']]"))
    shots.take("connection-saved")
    stored = api.ok("GET", f"/connections/{CONN_ID}")
    assert (stored["conn_type"], stored["host"], stored["login"]) == (
        "ews", own_mailbox.url, MAILBOX,
    )  # fmt: skip
    assert '"app_user": "browser"' in stored["extra"] and '"schedule": "none"' in stored["extra"]
    assert '"exchange_timezone": "W. Europe Standard Time"' in stored["extra"]

    # 3. Test on the list page: a success toast with the two parts on two lines
    css("button[aria-label='Test Connection']", row).click()
    toast = wait.until(
        lambda d: d.find_element(
            By.XPATH,
            "//*[@data-scope='toast'][@data-part='root'][.//*[contains(., 'Test Connection')]]",
        )
    )
    shots.take("connection-test")
    description = css("[data-part=description]", toast).text  # as rendered, line breaks kept
    lines = description.splitlines()
    assert toast.get_attribute("data-type") == "success", description
    assert len(lines) == 2, description
    assert lines[0].startswith(f"General connection: OK — {MAILBOX} @ {own_mailbox.url}"), lines
    assert lines[1].startswith("Send/receive data: OK"), lines

    # 4. the connection's DAG appears (no restart); trigger it from its page
    wait_for(
        f"DAG {DAG_ID}",
        lambda: (api.dag(DAG_ID) or {}).get("is_stale") is False,
        timeout=120,
    )
    driver.get(f"{stack.api_url}/dags/{DAG_ID}")
    trigger = wait.until(lambda d: css("[data-testid=trigger-dag-button]"))
    assert css("[data-testid=toggle-pause]").get_attribute("data-state") == "checked", (
        "the DAG is paused in the UI"
    )
    shots.take("dag")
    trigger.click()
    dialog = wait.until(
        lambda d: d.find_element(
            By.XPATH,
            "//*[@data-scope='dialog'][@data-part='content'][.//*[contains(., 'Trigger Dag')]]",
        )
    )
    shots.take("trigger-dialog")
    dialog.find_element(By.XPATH, ".//button[normalize-space()='Trigger']").click()
    wait.until(lambda d: f"/dags/{DAG_ID}/runs/" in d.current_url)
    run_id = unquote(re.search(r"/runs/([^/?#]+)", driver.current_url).group(1))

    # 5. the run page follows the run until it ends: Success
    badge = "[data-testid=header-card] [data-testid=state-badge]"
    WebDriverWait(driver, 420, poll_frequency=3, ignored_exceptions=rerendered).until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, badge)
            and d.find_element(By.CSS_SELECTOR, badge).text.strip() in ("Success", "Failed")
        )
    )
    shots.take("run-finished")
    assert css(badge).text.strip() == "Success", api.task_instances(DAG_ID, run_id)
    states = {task: ti["state"] for task, ti in api.task_instances(DAG_ID, run_id).items()}
    assert states == dict.fromkeys(STEPS, "success")
    with psycopg2.connect(stack.calendar_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM calendar.live_appointments a JOIN calendar.users u "
            "ON u.id = a.owner_user_id WHERE u.login = %s",
            (APP_USER,),
        )
        assert cur.fetchone()[0] > 20
