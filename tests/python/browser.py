"""Headless Chromium for the management UI's browser tests (test_ui.py), through selenium.

Debian's `chromium` and `chromium-driver` (/usr/bin/chromium, /usr/bin/chromedriver;
scripts/test.sh installs them where apt-get works). Selenium is given both paths, so it
never looks for or downloads a browser or a driver. Missing either: the tests are skipped
with the reason. `UI_SCREENSHOTS=dir` makes `Ui.screenshot` save PNGs there (the ones in
docs/images come from `UI_SCREENSHOTS=docs/images`)."""
import os
import shutil
import tempfile

import pytest

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,800", "--hide-scrollbars", "--force-device-scale-factor=1",
]


def skip_reason():
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} missing: apt-get install {package} (scripts/test.sh does where apt-get works)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "python selenium missing: pip install -r tests/python/requirements.txt"
    return None


@pytest.fixture(scope="module")
def driver():
    """One headless Chromium per test module, with a fresh profile."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")
    profile = tempfile.mkdtemp(prefix="broker-ui-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={profile}")
    # the console, so tests can see Content-Security-Policy violations
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    d.set_window_size(1280, 800)
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def ui(driver, http_url):
    """The UI on the suite's broker in the module's browser; the session is forgotten after
    each test."""
    u = Ui(driver, http_url)
    yield u
    u.logout()


class Ui:
    """The UI in the browser: open pages, log in and out, wait for what the page shows."""

    def __init__(self, driver, base):
        self.d = driver
        self.base = base.rstrip("/")

    def open(self, hash_path=""):
        """Loads the page afresh at `#/<hash_path>` (segments already encoded): through
        about:blank, as a change of hash alone would not reload the page."""
        self.d.get("about:blank")
        self.d.get(f"{self.base}/#/{hash_path}")

    def wait(self, cond, timeout=15, message=""):
        """Polls `cond` until it gives a true value. A condition that read an element the
        page's 5 s refresh replaced meanwhile (StaleElementReferenceException) has not
        seen the page yet: it runs again on the next poll, on the new element."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.d, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: cond(), message)

    def css(self, selector):
        from selenium.webdriver.common.by import By

        return self.d.find_elements(By.CSS_SELECTOR, selector)

    def one(self, selector, timeout=15):
        """The first element matching `selector`, waited for."""
        return self.wait(lambda: (self.css(selector) or [None])[0], timeout, f"no {selector}")

    def click(self, selector):
        """Clicks the first match once it is there, again if a refresh replaced it between
        finding and clicking (tables redraw their rows on each 5 s refresh and after a
        filter change)."""
        def attempt():
            self.one(selector).click()
            return True

        self.wait(attempt, message=f"cannot click {selector}")

    def text(self, selector):
        """The first match's text ("" when none); read again when a redraw replaced the
        element between finding and reading it (pages redraw on each 5 s refresh)."""
        from selenium.common.exceptions import StaleElementReferenceException

        for _ in range(20):
            els = self.css(selector)
            try:
                return els[0].text if els else ""
            except StaleElementReferenceException:
                continue
        return ""

    def login(self, user="guest", password="guest", expect_ok=True):
        self.open()
        self.one("#login-user").send_keys(user)
        self.one("#login-password").send_keys(password)
        self.one("#login-submit").click()
        if expect_ok:
            self.wait(lambda: self.text("#who-name") == user, message="not logged in")

    def logout(self):
        self.d.execute_script("sessionStorage.clear()")

    def csp_violations(self):
        """Console messages about the Content-Security-Policy since the last call."""
        return [e["message"] for e in self.d.get_log("browser") if "Content Security Policy" in e["message"]]

    def banner(self):
        return self.text("#banner.error .banner-text")

    def screenshot(self, name):
        out = os.environ.get("UI_SCREENSHOTS")
        if out:
            os.makedirs(out, exist_ok=True)
            self.d.save_screenshot(os.path.join(out, f"ui-{name}.png"))
