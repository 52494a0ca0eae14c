import json
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

from svdtune.pipelines import WORLD_MARKER, absent_components, is_world_model, load_evaluator
from svdtune.train.reference.recipe import train_family


def test_family_recipe_trains_exports_and_skips_finished_stages(tiny_family):
    cfg, export = tiny_family
    run = Path(cfg.output_dir)
    timings = json.loads((run / "timings.json").read_text())
    assert set(timings) == {"evaluator", "vae", "unet", "dit"}
    assert "steps: 2" in (run / "config.yaml").read_text()

    for name in ("ref-unet", "ref-dit"):
        pipe = DiffusionPipeline.from_pretrained(export / name, dtype=torch.float32, **absent_components(export / name))
        out = pipe("a red circle", num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
        assert out.images.shape == (1, 48, 48, 3)
        assert (export / name / WORLD_MARKER).is_file() and is_world_model(str(export / name))
        assert pipe.vae.config.scaling_factor != 1.0  # latent normalisation measured and exported
    assert load_evaluator(export / "evaluator").feature_dim == 128

    train_family(cfg)  # every stage is finished: nothing is retrained
    assert json.loads((run / "timings.json").read_text()) == timings
