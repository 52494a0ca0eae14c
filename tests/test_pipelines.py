import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusion3Pipeline, StableDiffusionPipeline

from svdtune.errors import UserError
from svdtune.generate import generate_images
from svdtune.pipelines import REFERENCE_DIR, absent_components, load_pipeline, resolve_model
from tests.conftest import NOT_SHIPPED, SHIPPED, needs_shipped_weights

PROMPTS = ["a large red circle at the top left, on a white background", "a small blue cross in the center, on a white background"]


@needs_shipped_weights
@pytest.mark.parametrize("name, cls", [("ref-unet", StableDiffusionPipeline), ("ref-dit", StableDiffusion3Pipeline)])
def test_reference_pipelines_reload_offline_with_stock_classes(name, cls, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = DiffusionPipeline.from_pretrained(REFERENCE_DIR / name, dtype=torch.float32, **absent_components(REFERENCE_DIR / name))
    assert type(pipe) is cls


@pytest.mark.parametrize("name", ["ref-unet", "ref-dit"])
@pytest.mark.parametrize("source", ["shipped", "recipe"])
def test_generation_is_deterministic_for_a_seed(name, source, request):
    if source == "shipped":
        if not SHIPPED:
            pytest.skip(NOT_SHIPPED)
        pipe = load_pipeline(name)
    else:
        pipe = load_pipeline(str(request.getfixturevalue("tiny_family")[1] / name))
    a, _ = generate_images(pipe, PROMPTS, steps=4, guidance_scale=4.0, seed=7, batch_size=2)
    b, _ = generate_images(pipe, PROMPTS, steps=4, guidance_scale=4.0, seed=7, batch_size=1)
    c, _ = generate_images(pipe, PROMPTS, steps=4, guidance_scale=4.0, seed=8, batch_size=2)
    assert a.shape == (2, 48, 48, 3)
    np.testing.assert_allclose(a, b, atol=1e-4)  # same seeds, other batching: same images
    assert np.abs(a - c).max() > 0.1  # another seed: other images (the white background stays white)


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no model_index.json"):
        resolve_model(str(tmp_path))
