"""The demo over its HTTP API (gradio_client), one test per input mode, then the bad inputs of issue 8:
each gets a message naming the problem, and the app answers the next request."""

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from svdtune.data.domains import load_domain

PROMPT = "a large red circle at the top left, on a white background"


@pytest.fixture(scope="module")
def client(demo_url):
    return Client(demo_url, verbose=False)


def text(client, prompt=PROMPT, rewrite=False, domain="pastel", variant="16-bit", steps=2):
    return client.predict(prompt, rewrite, domain, variant, steps, 4.0, 0, 0.7, api_name="/text")


def answers_next_request(client):
    image, _, info, _ = text(client, steps=1)
    return Image.open(image).size == (48, 48) and "inference time" in info


def test_text_to_image_reports_time_memory_and_size(client):
    image, used, info, history = text(client)
    assert Image.open(image).size == (48, 48)
    assert used == PROMPT
    assert "inference time" in info and " s (2 steps, text)" in info
    assert "peak memory" in info and "MiB" in info and "model size" in info
    assert history["headers"][:3] == ["variant", "mode", "prompt"] and history["data"][0][:2] == ["16-bit", "text"]


def test_text_with_rewrite_shows_the_prompt_given_to_the_model(client):
    _, used, info, history = text(client, prompt="a red circle", rewrite=True, domain="neon")
    first_line, note = used.split("\n", 1)
    # the random tiny rewriter: the guardrail keeps the user's words (or falls back to the style suffix)
    assert "red" in first_line and "circle" in first_line and note.startswith("(")
    if "style suffix" in note:
        assert first_line == "a red circle" + load_domain("neon").style_suffix
    assert history["data"][0][1] == "text + rewrite" and "prompt rewrite" in info


def test_variants_are_compared_in_the_history(client):
    text(client, variant="W4A4")
    _, _, info, history = text(client, variant="16-bit")
    assert "model size" in info
    rows = history["data"]
    assert [r[0] for r in rows[:2]] == ["16-bit", "W4A4"] and rows[1][6] < rows[0][6]  # 4-bit is smaller


@pytest.mark.parametrize("variant", ["dit 16-bit", "W4A4"])  # SD3 and SD image-to-image; a 4-bit UNet in it
def test_image_to_image_from_an_upload(client, tmp_path, variant):
    path = tmp_path / "photo.png"
    Image.linear_gradient("L").resize((120, 90)).convert("RGB").save(path)
    image, _, info, _ = client.predict("a small blue square", False, "pastel", variant, 4, 4.0, 0,
                                       handle_file(str(path)), 0.5, api_name="/image")
    assert Image.open(image).size == (48, 48) and "(2 of 4 steps, image)" in info


def test_sketch_to_image(client, tmp_path):
    path = tmp_path / "sketch.png"
    drawing = Image.new("RGBA", (384, 384), (0, 0, 0, 0))
    drawing.paste((0, 0, 255, 255), (40, 200, 180, 340))
    drawing.save(path)
    sketch = {"background": None, "layers": [], "composite": handle_file(str(path))}
    image, _, info, _ = client.predict("a large blue square at the bottom left", False, "pastel", "16-bit", 4, 4.0, 0,
                                       sketch, 0.7, api_name="/sketch")
    assert Image.open(image).size == (48, 48) and "(2 of 4 steps, sketch)" in info


@pytest.mark.parametrize("prompt, steps, message", [
    ("", 2, "the prompt is empty: type what to draw"),
    ("   ", 2, "the prompt is empty"),
    (PROMPT, 10_000, r"steps = 10000 is outside 1\.\.100 \(limits\.max_steps\)"),
    ("x" * 1000, 2, r"the prompt is 1000 characters long; the limit is 400"),
])
def test_bad_text_input_is_refused_and_the_app_keeps_serving(client, prompt, steps, message):
    with pytest.raises(AppError, match=message):
        text(client, prompt=prompt, steps=steps)
    assert answers_next_request(client)


@pytest.fixture(scope="module")
def upload_20mb(tmp_path_factory):
    big = tmp_path_factory.mktemp("big") / "big.png"
    Image.effect_noise((2600, 2600), 64).convert("RGB").save(big, compress_level=0)  # a real 20 MB image
    assert big.stat().st_size > 19 * 2**20
    return big


def test_a_20mb_upload_is_refused_and_the_app_keeps_serving(client, upload_20mb):
    # gradio_client reads the app's upload limit (limits.max_upload_mb) and refuses before sending
    with pytest.raises(ValueError, match=r"big\.png exceeds the maximum file size of 8388608 bytes"):
        client.predict(PROMPT, False, "pastel", "16-bit", 2, 4.0, 0, handle_file(str(upload_20mb)), 0.7,
                       api_name="/image")
    assert answers_next_request(client)


def test_a_20mb_upload_over_plain_http_is_refused_by_the_server(demo_url, client, upload_20mb):
    with open(upload_20mb, "rb") as f:
        response = httpx.post(f"{demo_url.rstrip('/')}/gradio_api/upload", files={"files": ("big.png", f, "image/png")},
                              timeout=60)
    assert response.status_code == 413 and "File size exceeded maximum allowed size of 8388608 bytes" in response.text
    assert answers_next_request(client)


def test_a_non_image_upload_is_refused_and_the_app_keeps_serving(client, tmp_path):
    notes = tmp_path / "notes.png"  # an image's name, text inside
    notes.write_text("this is not an image\n" * 50)
    with pytest.raises(AppError, match=r"the uploaded image 'notes\.png' is not an image this app can read"):
        client.predict(PROMPT, False, "pastel", "16-bit", 2, 4.0, 0, handle_file(str(notes)), 0.7, api_name="/image")
    assert answers_next_request(client)


def test_variant_missing_from_the_dropdown_cannot_be_requested(client):
    with pytest.raises(AppError, match="unknown model variant 'gone'"):
        text(client, variant="gone")
    assert answers_next_request(client)


def test_a_variant_that_fails_to_load_is_a_message_and_the_app_keeps_serving(client):
    with pytest.raises(AppError, match=r"the variant 'broken' \(.*broken-model.*\) could not be loaded: OSError"):
        text(client, variant="broken")
    assert answers_next_request(client)
