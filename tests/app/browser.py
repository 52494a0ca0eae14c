"""Headless Chromium (Debian packages `chromium` and `chromium-driver`) driven by selenium, and the
demo's generate-and-wait steps, shared by the browser test and the README screenshot."""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver (./launch.sh test does it where apt is available)"


def missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    absent = [p for p in CHROMIUM if not Path(p).is_file()]
    if absent and not (shutil.which("chromium") and shutil.which("chromedriver")):
        return f"{', '.join(absent)} not found: {INSTALL}"
    return None


def chromium(profile: Path, width: int = 1280, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or CHROMIUM[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(arg)
    # The driver's path is given, so selenium's own driver download (no network here) is never tried.
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or CHROMIUM[1]), options=options)


def page_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def wait_for_text(driver, text: str, timeout: float = 60) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: text in page_text(d))


def generate(driver, prompt: str, timeout: float = 120) -> str:
    """Type `prompt`, click Generate, wait until the result image and this run's timing are shown (the
    timing text changes with every run: a new time, a new history); the timing text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    info = driver.find_element(By.CSS_SELECTOR, "#run-info textarea")
    before = info.get_attribute("value")
    box = driver.find_element(By.CSS_SELECTOR, "#prompt textarea")
    box.clear()
    if prompt:
        box.send_keys(prompt)
    driver.find_element(By.ID, "generate").click()
    WebDriverWait(driver, timeout).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#output-image img")
        and info.get_attribute("value") != before and "inference time" in info.get_attribute("value"))
    return info.get_attribute("value")


def choose(driver, elem_id: str, label: str) -> None:
    """Pick `label` in the gr.Dropdown with this elem_id."""
    import time

    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input").click()
    time.sleep(0.3)  # the option list opens with a transition
    driver.find_element(By.CSS_SELECTOR, f'#{elem_id} li[aria-label="{label}"]').click()


def type_number(driver, label: str, value: str) -> str:
    """Type `value` into the number box with this aria-label, leave it; the value the page then shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, f'input[type=number][aria-label="{label}"]')
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(value, Keys.TAB)
    return box.get_attribute("value")


def tab(driver, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//button[@role='tab' and normalize-space()='{name}']").click()


def upload(driver, elem_id: str, path: Path) -> None:
    """Give `path` to the upload input of the component with this elem_id, as a user picking the file would."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys(str(path))


def close_messages(driver) -> None:
    """Dismiss gradio's toasts (errors, warnings), so that they do not cover the result."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, ".toast-close"):
        button.click()


def screenshot(driver, path: Path) -> Path:
    """The whole page as PNG: the viewport is set to the page's full height first (a headless window
    does not grow by resizing it)."""
    width = driver.execute_script("return window.innerWidth")
    for _ in range(2):  # the layout may grow once more at the new height
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path
