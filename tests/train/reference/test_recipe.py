import dataclasses
import json
from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file

from svdtune.data import world
from svdtune.errors import UserError
from svdtune.pipelines import WORLD_MARKER, absent_components, is_world_model, load_evaluator, load_pipeline
from svdtune.train.reference.recipe import train_family


def test_family_recipe_trains_exports_and_skips_finished_stages(tiny_family):
    cfg, export = tiny_family
    run = Path(cfg.output_dir)
    timings = json.loads((run / "timings.json").read_text())
    assert set(timings) == {"evaluator", "vae", "unet", "unet_refine", "dit"}
    assert "steps: 2" in (run / "config.yaml").read_text()

    pipes = {}
    for name in ("ref-unet", "ref-dit"):
        pipe = pipes[name] = DiffusionPipeline.from_pretrained(export / name, dtype=torch.float32,
                                                               **absent_components(export / name))
        out = pipe("a red circle", num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
        assert out.images.shape == (1, 48, 48, 3)
        assert (export / name / WORLD_MARKER).is_file() and is_world_model(str(export / name))
    assert load_evaluator(export / "evaluator").feature_dim == 128
    # ref-dit is trained without SD3's zero T5 padding, and svdtune calls it the same way.
    assert load_pipeline(str(export / "ref-dit")).svdtune_call_kwargs == {"max_sequence_length": 0}
    assert load_pipeline(str(export / "ref-unet")).svdtune_call_kwargs == {}

    # What was trained is what was used downstream and exported (not a fresh copy).
    exported = pipes["ref-unet"]
    # the UNet as its last stage (the refinement) left it
    for component, stage_file in ((exported.unet, "unet_refine.unet"), (exported.vae.encoder, "vae.model")):
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
    # every component ships in fp16, the UNet pipeline's text encoder (rebuilt without projection) too
    assert json.loads((export / "ref-unet/text_encoder/config.json").read_text())["dtype"] == "float16"
    assert all(t.dtype == torch.float16 for t in load_file(export / "ref-unet/text_encoder/model.safetensors").values())

    # a finished stage is not silently kept for another config
    with pytest.raises(UserError, match=r"finished unet stage was made with unet.lr = 0.0004, this config has 0.001"):
        train_family(dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, lr=1e-3)))
    with pytest.raises(UserError, match="finished evaluator stage was made with seed = 0, this config has 1"):
        train_family(dataclasses.replace(cfg, seed=1))


def test_tokenizer_is_identical_in_every_process():
    # A BPE trainer breaks ties in hash order: ids then differ between processes, and a text
    # encoder trained in one process reads scrambled ids in the next (this happened once).
    import subprocess
    import sys

    from svdtune.train.reference.components import build_tokenizer

    code = "import json; from svdtune.train.reference.components import build_tokenizer; " \
           "print(json.dumps(build_tokenizer(0).get_vocab(), sort_keys=True))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(other.strip().splitlines()[-1]) == build_tokenizer(0).get_vocab()
    tok = build_tokenizer(0)
    assert tok.convert_ids_to_tokens(tok("at the top left").input_ids)[1:-1] == ["at</w>", "the</w>", "top</w>", "left</w>"]


def test_tokenizer_reads_every_world_word_as_one_token():
    # BPE applies merges by rank: a chain of merges built left to right per word is cut by an
    # earlier word's merges (the first version read "triangle" as t-ri-an-gl-e).
    from svdtune.train.reference.components import build_tokenizer

    tok = build_tokenizer(0)
    split = {w: tok.tokenize(w) for w in sorted(world.VOCABULARY) if len(tok.tokenize(w)) != 1}
    assert not split, f"words read as several tokens: {split}"
    assert len(set(tok.get_vocab().values())) == len(tok.get_vocab())
