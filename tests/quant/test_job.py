"""`svdtune quantize` end to end on the recipe-trained tiny family: calibrate through the pipeline,
save, reload into the pipeline without recalibrating, generate."""

import json

import numpy as np
import pytest

from svdtune.cli import main
from svdtune.generate import generate_images
from svdtune.pipelines import load_any_pipeline
from svdtune.quant.linear import SVDQuantLinear


@pytest.mark.parametrize("model", ["ref-dit", "ref-unet"])
def test_quantize_command_then_generate(tiny_family, tmp_path, model):
    _, export = tiny_family
    out = tmp_path / model
    code = main(["quantize", f"model={export / model}", f"output_dir={out}", "quant.rank=8",
                 "quant.calibration.prompts=4", "quant.calibration.steps=2", "quant.calibration.batch_size=4",
                 "quant.calibration.sample_tokens=32"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layers"] > 0 and summary["size"]["layers_ratio"] < 1
    assert "calibrate" in summary["seconds"] and (out / "config.yaml").is_file()

    pipe = load_any_pipeline(str(out))  # the source pipeline around the saved denoiser, CPU kernels
    denoiser = pipe.transformer if model == "ref-dit" else pipe.unet
    assert sum(isinstance(m, SVDQuantLinear) for m in denoiser.modules()) == summary["layers"]
    a, _ = generate_images(pipe, ["a red circle"], steps=2, guidance_scale=4.0, seed=3)
    b, _ = generate_images(pipe, ["a red circle"], steps=2, guidance_scale=4.0, seed=3)
    assert a.shape == (1, 48, 48, 3) and np.isfinite(a).all() and np.array_equal(a, b)


def test_quantize_command_rejects_bad_method(capsys):
    assert main(["quantize", "quant.method=gptq"]) == 2
    assert "quant.method: 'gptq' is not allowed" in capsys.readouterr().err


@pytest.mark.parametrize("config", ["sdxl", "flux-dev", "flux-schnell", "sana", "pixart-sigma"])
def test_dry_run_of_the_big_model_configs(config, tmp_path):
    # No weights here: each config's architecture is built on the meta device and planned.
    assert main(["quantize", "--config", f"configs/quant/{config}.yaml", "dry_run=true", f"output_dir={tmp_path}"]) == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert len(plan["quantized"]) > 100
    # 4-bit weights + 16-bit group scales + rank-32 branch: at most 0.32x the same layers in 16-bit
    assert plan["size"]["layers_ratio"] <= 0.32
