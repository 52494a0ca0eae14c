"""End to end in headless Chromium: open the demo; an empty prompt, a 20 MB upload and a non-image
upload each get a visible message, steps = 10,000 is held to the limit in the page; then type a prompt,
click Generate, wait for the image and the timing / memory text, save a screenshot."""

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.app import browser

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=f"browser test: {browser.missing()}")


def test_generate_in_a_real_browser(demo_url, tmp_path, capsys):
    from selenium.webdriver.common.by import By

    big, notes = tmp_path / "big.png", tmp_path / "notes.png"
    Image.effect_noise((2600, 2600), 64).convert("RGB").save(big, compress_level=0)  # 20 MB
    notes.write_text("not an image\n" * 50)
    driver = browser.chromium(tmp_path / "profile")
    try:
        driver.get(demo_url)
        browser.wait_for_text(driver, "svdtune demo")
        driver.find_element(By.ID, "generate").click()  # nothing typed yet
        browser.wait_for_text(driver, "the prompt is empty: type what to draw")
        browser.close_messages(driver)

        browser.tab(driver, "Image")
        browser.upload(driver, "upload", big)  # refused by the page before it is sent (limits.max_upload_mb)
        browser.wait_for_text(driver, "exceed the maximum allowed size of 8.0 M")  # gradio writes "Mb"
        browser.close_messages(driver)
        browser.upload(driver, "upload", notes)
        driver.find_element(By.CSS_SELECTOR, "#prompt textarea").send_keys("a red circle")
        driver.find_element(By.ID, "generate-image").click()
        browser.wait_for_text(driver, "the uploaded image 'notes.png' is not an image this app can read")
        browser.close_messages(driver)

        browser.tab(driver, "Text")  # the app still answers
        # steps = 10,000 typed in the page: the slider's box shows its limit (the API refuses it with a message)
        assert browser.type_number(driver, "number input for steps", "10000") == "100"
        assert browser.type_number(driver, "number input for steps", "2") == "2"

        info = browser.generate(driver, "a large red circle at the top left, on a white background")
        assert "inference time" in info and "(2 steps, text)" in info and "peak memory" in info and "model size" in info
        image = driver.find_element(By.CSS_SELECTOR, "#output-image img")
        assert image.is_displayed() and image.size["width"] >= 96  # 48 px, shown enlarged
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) == 48
        assert "16-bit" in driver.find_element(By.ID, "history").text  # the run is in the history table

        shot = browser.screenshot(driver, tmp_path / "demo-screenshot.png")
    finally:
        driver.quit()
    assert Image.open(shot).size[0] >= 1000
    copies = [shot]
    if os.environ.get("SVDTUNE_SCREENSHOT_DIR"):
        copies.append(Path(os.environ["SVDTUNE_SCREENSHOT_DIR"]) / shot.name)
        copies[-1].parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, copies[-1])
    with capsys.disabled():
        print(f"\n[demo screenshot] {', '.join(str(c) for c in copies)}")
