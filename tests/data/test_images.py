from svdtune.data.images import image_problem, load_image
from tests.data import fixtures


def test_image_checks_find_missing_truncated_and_non_images(tmp_path):
    good = fixtures.jpeg(tmp_path / "good.jpg")
    cut = fixtures.truncated_jpeg(tmp_path / "cut.jpg")
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    assert image_problem(str(good), "decode") == ""
    assert image_problem(str(cut), "decode") == "image truncated or not an image"
    assert image_problem(str(cut), "exists") == ""  # only a decode sees the damage
    assert image_problem(str(text), "decode") == "image truncated or not an image"
    assert image_problem(str(tmp_path / "none.jpg"), "exists") == "image file missing"
    assert image_problem("", "exists") == "record has no image"
    assert image_problem("world://neon/0/1", "decode") == ""


def test_world_addresses_load_as_images():
    assert load_image("world://pastel/0/2").size == (48, 48)
