"""The demo's input checks: every refusal names the value and the limit (no model is loaded here)."""

import os

import pytest
from PIL import Image

from svdtune.app import limits
from svdtune.app.config import DemoConfig, Limits
from svdtune.app.limits import DemoInputError
from svdtune.config import ConfigError, load_config

LIM = Limits()


@pytest.mark.parametrize("prompt, message", [
    ("", "the prompt is empty: type what to draw"),
    ("   \n\t", "the prompt is empty"),
    (None, "the prompt is empty"),
    ("x" * 401, r"the prompt is 401 characters long; the limit is 400 \(limits.max_prompt_chars\)"),
    (12, "the prompt must be text, got int"),
])
def test_bad_prompts(prompt, message):
    with pytest.raises(DemoInputError, match=message):
        limits.check_prompt(prompt, LIM)


def test_good_prompt_is_stripped():
    assert limits.check_prompt("  a red circle \n", LIM) == "a red circle"
    assert limits.check_prompt("x" * 400, LIM) == "x" * 400


@pytest.mark.parametrize("steps, message", [
    (10_000, r"steps = 10000 is outside 1\.\.100 \(limits\.max_steps\)"),
    (0, r"steps = 0 is outside 1\.\.100"),
    (-3, r"steps = -3 is outside"),
    (2.5, r"steps = 2\.5 is outside"),
    ("20", "steps must be a number, got '20'"),
    (True, "steps must be a number, got True"),
    (float("nan"), "steps must be a number, got nan"),
])
def test_bad_steps(steps, message):
    with pytest.raises(DemoInputError, match=message):
        limits.check_steps(steps, LIM)


def test_good_values_pass_through():
    assert limits.check_steps(100, LIM) == 100 and limits.check_steps(20.0, LIM) == 20
    assert limits.check_guidance(0, LIM) == 0.0 and limits.check_seed(2**32 - 1) == 2**32 - 1
    assert limits.check_strength(0.5, 4) == 0.5


@pytest.mark.parametrize("call, message", [
    (lambda: limits.check_guidance(25, LIM), r"guidance = 25 is outside 0\.\.20 \(limits\.max_guidance\)"),
    (lambda: limits.check_guidance(-1, LIM), r"guidance = -1 is outside"),
    (lambda: limits.check_seed(-1), r"seed = -1 must be a whole number in 0\.\.4294967295"),
    (lambda: limits.check_seed(1.5), r"seed = 1\.5 must be a whole number"),
    (lambda: limits.check_strength(0, 20), r"strength = 0 must be in \(0, 1\]"),
    (lambda: limits.check_strength(1.5, 20), r"strength = 1\.5 must be in"),
    (lambda: limits.check_strength(0.1, 5), r"strength 0\.1 x 5 steps leaves no denoising step"),
])
def test_bad_numbers(call, message):
    with pytest.raises(DemoInputError, match=message):
        call()


def test_upload_over_the_byte_limit_is_refused_before_decoding(tmp_path):
    big = tmp_path / "big.png"
    with open(big, "wb") as f:  # a PNG header and 20 MB: never decoded
        f.write(b"\x89PNG\r\n\x1a\n")
        f.seek(20 * 2**20 - 1)
        f.write(b"\0")
    with pytest.raises(DemoInputError, match=r"the upload 'big\.png' is 20\.0 MB; the limit is 8 MB \(limits\.max_upload_mb\)"):
        limits.open_upload(big, LIM)


def test_non_image_upload(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n" * 100)
    with pytest.raises(DemoInputError, match=r"the upload 'notes\.txt' is not an image this app can read"):
        limits.open_upload(text, LIM)
    # the name shown is the user's file name, not the server's temporary one
    with pytest.raises(DemoInputError, match=r"the sketch 'drawing\.png' is not an image"):
        limits.open_upload(text, LIM, "the sketch", "drawing.png")


def test_pixel_limit_is_read_from_the_header(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (200, 100), "red").save(path)
    with pytest.raises(DemoInputError, match=r"is 200x100 = 0\.0 megapixels; the limit is 0\.0 megapixels \(limits\.max_pixels\)"):
        limits.open_upload(path, Limits(max_pixels=19_999))
    assert limits.open_upload(path, Limits(max_pixels=20_000)).size == (200, 100)


def test_missing_upload_and_transparency(tmp_path):
    with pytest.raises(DemoInputError, match="no image: the upload is missing"):
        limits.open_upload(None, LIM)
    with pytest.raises(DemoInputError, match="'gone.png' was not received"):
        limits.open_upload(tmp_path / "gone.png", LIM)
    path = tmp_path / "clear.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(path)  # fully transparent: white, like the canvas
    image = limits.open_upload(path, LIM)
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)
    assert limits.is_blank(image) and not limits.is_blank(Image.linear_gradient("L").convert("RGB"))


def test_config_checks_and_listening_address(tmp_path):
    assert not DemoConfig().listens_beyond_this_machine  # 127.0.0.1 by default
    assert DemoConfig(host="0.0.0.0").listens_beyond_this_machine
    assert not DemoConfig(host="localhost").listens_beyond_this_machine
    with pytest.raises(ConfigError, match="domains: unknown domain 'sepia'"):
        load_config(DemoConfig, None, ["domains=[pastel, sepia]"])
    with pytest.raises(ConfigError, match="port 70000 is not a TCP port"):
        load_config(DemoConfig, None, ["port=70000"])
    with pytest.raises(ConfigError, match=r"limits.max_steps must be positive, got 0"):
        load_config(DemoConfig, None, ["limits.max_steps=0"])
    cfg = load_config(DemoConfig, "configs/demo.yaml", ["limits.max_upload_mb=2"])
    assert cfg.host == "127.0.0.1" and cfg.limits.max_upload_mb == 2 and cfg.limits.max_steps == 100
