import json
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file

from svdtune.data import world
from svdtune.pipelines import WORLD_MARKER, absent_components, is_world_model, load_evaluator
from svdtune.train.reference.recipe import train_family


def test_family_recipe_trains_exports_and_skips_finished_stages(tiny_family):
    cfg, export = tiny_family
    run = Path(cfg.output_dir)
    timings = json.loads((run / "timings.json").read_text())
    assert set(timings) == {"evaluator", "vae", "unet", "dit"}
    assert "steps: 2" in (run / "config.yaml").read_text()

    pipes = {}
    for name in ("ref-unet", "ref-dit"):
        pipe = pipes[name] = DiffusionPipeline.from_pretrained(export / name, dtype=torch.float32,
                                                               **absent_components(export / name))
        out = pipe("a red circle", num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
        assert out.images.shape == (1, 48, 48, 3)
        assert (export / name / WORLD_MARKER).is_file() and is_world_model(str(export / name))
    assert load_evaluator(export / "evaluator").feature_dim == 128

    # What was trained is what was used downstream and exported (not a fresh copy).
    exported = pipes["ref-unet"]
    for component, stage_file in ((exported.unet, "unet.unet"), (exported.vae.encoder, "vae.model")):
        trained = load_file(run / f"{stage_file}.safetensors")
        prefix = "encoder." if stage_file == "vae.model" else ""
        for key, value in component.state_dict().items():
            torch.testing.assert_close(value, trained[prefix + key].half().float(), rtol=0, atol=0)

    # The exported VAE's latents of the training scenes are normalised per channel.
    scenes = [world.sample_scene(world.scene_rng(cfg.seed, j), style="plain") for j in range(cfg.n_scenes)]
    with torch.no_grad():
        z = exported.vae.encode(torch.from_numpy(world.render_batch(scenes)) * 2 - 1).latent_dist.mean
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(4), atol=0.02, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.ones(4), atol=0.02, rtol=0)

    train_family(cfg)  # every stage is finished: nothing is retrained
    assert json.loads((run / "timings.json").read_text()) == timings
