"""The demo engine without a browser: variants offered, requests checked, each mode generated, the
pipeline cache bounded, the rewrite toggle with and without a rewriter."""

import pytest
from PIL import Image

from svdtune.app.config import DemoConfig
from svdtune.app.engine import Engine, Request
from svdtune.app.limits import DemoInputError
from svdtune.data.domains import load_domain
from svdtune.errors import UserError
from tests.conftest import needs_shipped_weights

pytestmark = needs_shipped_weights


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(DemoConfig(variants=["unet=ref-unet", "dit=ref-dit", "missing=/no/such/run:0"],
                             rewriter=str(tmp_path_factory.mktemp("empty") / "no-rewriter"), cache_size=1))


def test_missing_variants_are_left_out_with_a_note(engine):
    assert list(engine.variants) == ["unet", "dit"]
    assert engine.notes == ["variant 'missing': '/no/such/run' does not exist; "
                            "RUN:STRENGTH needs a training run folder"]
    with pytest.raises(UserError, match="no model variant can be loaded: variant 'x': '/nowhere' does not exist"):
        Engine(DemoConfig(variants=["x=/nowhere"]))


@pytest.mark.parametrize("change, message", [
    (dict(variant="nope"), "unknown model variant 'nope'; choose one of unet, dit"),
    (dict(mode="video"), "unknown mode 'video'; expected one of text, image, sketch"),
    (dict(rewrite=True, domain="food"), "unknown domain 'food' for rewriting; choose one of pastel, neon"),
    (dict(prompt=" "), "the prompt is empty"),
    (dict(steps=10_000), r"steps = 10000 is outside 1\.\.100"),
    (dict(mode="image"), "no image: the uploaded image is missing"),
])
def test_bad_requests_fail_before_any_model_work(engine, change, message):
    request = Request(**{**dict(variant="unet", prompt="a red circle", steps=2), **change})
    with pytest.raises(DemoInputError, match=message):
        engine.generate(request)
    assert not engine.cache._items  # refused before any model is loaded


def test_text_then_image_on_another_variant_with_a_cache_of_one(engine, tmp_path):
    result = engine.generate(Request(variant="unet", prompt="a large red circle in the center, on a white background",
                                     steps=2, seed=1))
    assert result.image.size == (48, 48) and result.kind == "16-bit"
    assert result.seconds > 0 and result.peak_mib > 0 and result.model_mib > 1
    assert "inference time" in result.summary and "peak memory" in result.summary and "model size" in result.summary
    assert result.notes[0].startswith("loaded unet (ref-unet); a first run includes warm-up")
    assert result.history_row()[:4] == ["unet", "text", "a large red circle in the center, on a white background", 2]

    photo = tmp_path / "photo.jpg"  # not square, not the model's size: centre-cropped and resized
    Image.radial_gradient("L").resize((300, 200)).convert("RGB").save(photo)
    image = engine.generate(Request(variant="dit", prompt="a small green square", mode="image", image=photo,
                                    steps=4, strength=0.5))
    assert image.image.size == (48, 48) and list(engine.cache._items) == ["dit"]  # unet was unloaded
    again = engine.generate(Request(variant="dit", prompt="a small green square", mode="image", image=photo,
                                    steps=4, strength=0.5))
    assert again.notes == [] and again.image.tobytes() == image.image.tobytes()  # same seed, same image


def test_sketch_mode_refuses_an_empty_canvas_and_draws_from_a_sketch(engine, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGBA", (384, 384), (0, 0, 0, 0)).save(blank)
    with pytest.raises(DemoInputError, match="the sketch is empty: draw something first"):
        engine.generate(Request(variant="unet", prompt="a red circle", mode="sketch", image=blank, steps=2))
    drawn = Image.new("RGBA", (384, 384), (0, 0, 0, 0))
    drawn.paste((255, 0, 0, 255), (100, 100, 250, 250))
    drawn.save(tmp_path / "sketch.png")
    result = engine.generate(Request(variant="unet", prompt="a red square", mode="sketch",
                                     image=tmp_path / "sketch.png", steps=4, strength=0.6))
    assert result.image.size == (48, 48) and result.history_row()[1] == "sketch"


def test_rewrite_without_a_rewriter_adds_the_style_suffix_and_says_so(engine):
    assert "no rewriter at" in engine.styler.status and "style suffix" in engine.styler.status
    styled = engine.styler.apply("a red circle", "neon")
    assert styled.source == "suffix" and styled.text == "a red circle" + load_domain("neon").style_suffix
    assert "no rewriter at" in styled.note and "used the prompt plus the neon style suffix" in styled.note


def test_rewrite_with_a_rewriter_loads_it_once(tiny_llm):
    from svdtune.app.prompts import PromptStyler

    styler = PromptStyler(str(tiny_llm), dtype="float32")
    assert styler.status.endswith("(loaded on first use)")
    first = styler.apply("a red circle", "pastel")
    model = styler._rewriter
    second = styler.apply("a blue square", "pastel")
    assert styler._rewriter is model and styler.status.endswith("(loaded)")
    # the random tiny model drops words, so the guardrail answers: the result says which path it took
    for styled, prompt in ((first, "a red circle"), (second, "a blue square")):
        assert styled.source in ("model", "retry", "fallback") and styled.note
        if styled.source == "fallback":
            assert styled.text == prompt + load_domain("pastel").style_suffix


def test_a_rewriter_that_does_not_load_falls_back_with_the_reason(tmp_path):
    from svdtune.app.prompts import PromptStyler

    (tmp_path / "adapter").mkdir()  # looks like a train-rewriter run, holds nothing
    styler = PromptStyler(str(tmp_path))
    styled = styler.apply("a red circle", "pastel")
    assert styled.source == "suffix" and f"the rewriter at {str(tmp_path)!r} could not be loaded" in styled.note


def test_a_pipeline_that_is_generating_is_not_unloaded(engine):
    cache = engine.cache
    busy = cache.get(engine.variants["unet"])
    with busy.lock:  # another request is generating with it (concurrency > 1)
        cache.get(engine.variants["dit"])
        assert list(cache._items) == ["unet", "dit"]  # over cache_size 1 rather than dropping a busy one
    cache.get(engine.variants["dit"])
    assert list(cache._items) == ["dit"]  # idle again: back to the size, the least recently used goes
