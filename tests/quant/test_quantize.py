"""quantize() on tiny random models of every supported diffusers class; save / load."""

import copy
import json

import pytest
import torch

from svdtune.errors import UserError
from svdtune.quant.config import QuantConfig
from svdtune.quant.linear import SVDQuantLinear
from svdtune.quant.metrics import sqnr_db
from svdtune.quant.quantize import quantize, select_layers
from svdtune.quant.serialize import MANIFEST, load_quantized, save_quantized
from tests.quant.tiny_models import BUILDERS, FAST, build, calibrated


def run(model, kw):
    with torch.no_grad():
        return model(**kw, return_dict=False)[0]


@pytest.mark.parametrize("name", BUILDERS)
def test_quantize_every_architecture(name, tmp_path):
    cfg = QuantConfig(**FAST)
    model, inputs, stats = calibrated(name, cfg)
    reference = run(model, inputs(seed=2))
    quantize(model, cfg, calibration=stats)
    n_quantized = sum(isinstance(m, SVDQuantLinear) for m in model.modules())
    assert n_quantized == len(stats) > 0
    out = run(model, inputs(seed=2))
    # W4A4 on random weights, fresh inputs: well above noise (random-output SQNR is about 0 dB)
    assert sqnr_db(reference, out) > 12

    save_quantized(model, tmp_path / "q", source=name)
    fresh, _ = build(name)
    loaded = load_quantized(tmp_path / "q", fresh)
    assert torch.equal(run(loaded, inputs(seed=2)), out)  # bit-identical
    rebuilt = load_quantized(tmp_path / "q")  # model class and config from the manifest
    assert type(rebuilt) is type(model) and torch.equal(run(rebuilt, inputs(seed=2)), out)


def test_manifest_records_resolved_config_and_layers(tmp_path):
    model, _, stats = calibrated("sd3", QuantConfig(**FAST))
    quantize(model, QuantConfig(**FAST), calibration=stats)
    save_quantized(model, tmp_path, source="tiny-sd3")
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["model_class"] == "SD3Transformer2DModel" and manifest["source"] == "tiny-sd3"
    assert manifest["config"]["rank"] == 8 and manifest["config"]["weights"] == "int4"
    spec = manifest["layers"]["transformer_blocks.0.attn.to_q"]
    assert spec["group_size"] == 64 and spec["activations"] == "int4"
    assert QuantConfig.from_json(json.dumps(manifest["config"])) == QuantConfig(**FAST).resolved()


def test_loading_into_a_different_model_names_the_layer(tmp_path):
    model, _, stats = calibrated("pixart", QuantConfig(**FAST))
    quantize(model, QuantConfig(**FAST), calibration=stats)
    save_quantized(model, tmp_path)
    other, _ = build("sd3")
    with pytest.raises(UserError, match=r"layer 'transformer_blocks.0.attn1.to_q'|no layer 'transformer_blocks.0.attn1"):
        load_quantized(tmp_path, other)
    # a hand-edited manifest: the layer whose spec cannot be read is named
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    name = next(iter(manifest["layers"]))
    manifest["layers"][name]["group"] = manifest["layers"][name].pop("group_size")
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=f"layer {name!r} has an unreadable spec"):
        load_quantized(tmp_path, build("pixart")[0])


def test_method_ordering_on_a_model():
    # On the same calibration, SVDQuant >= SmoothQuant >= naive in output SQNR.
    results = {}
    for method, extra in (("rtn", {}), ("smoothquant", {}), ("svdquant", {"rank": 8})):
        cfg = QuantConfig(method=method, smooth_alphas=[0.3, 0.5, 0.7], shrink_grid=[1.0, 0.9], **extra)
        model, inputs, stats = calibrated("flux", cfg)
        reference = run(model, inputs(seed=2))
        quantize(model, cfg, calibration=stats)
        results[method] = sqnr_db(reference, run(model, inputs(seed=2)))
    assert results["svdquant"] > results["smoothquant"] >= results["rtn"] - 0.5, results


def test_gptq_residual_through_quantize():
    cfg = QuantConfig(**FAST, gptq=True)
    model, inputs, stats = calibrated("flux", cfg)
    assert all(s.gram is not None and s.gram.shape == (s.sample.shape[1],) * 2 for s in stats.values())
    reference = run(model, inputs(seed=2))
    plain = quantize(copy.deepcopy(model), QuantConfig(**FAST), calibration=stats)
    quantize(model, cfg, calibration=stats)
    name = "transformer_blocks.0.attn.to_q"
    assert not torch.equal(model.get_submodule(name).qweight, plain.get_submodule(name).qweight)  # GPTQ rounded
    assert sqnr_db(reference, run(model, inputs(seed=2))) > 12


def test_a_layer_whose_fit_fails_is_named():
    cfg = QuantConfig(**FAST, gptq=True)
    model, _, stats = calibrated("flux", cfg)
    name = "transformer_blocks.0.attn.to_q"
    stats[name].gram.fill_(float("nan"))  # GPTQ's Cholesky cannot factor it
    with pytest.raises(RuntimeError, match=f"quantizing layer '{name}' \\(Linear, weight \\(\\d+, \\d+\\)\\) failed"):
        quantize(model, cfg, calibration=stats)


def test_weight_only_layers(tmp_path):
    """FLUX's AdaLN modulation as nunchaku stores it: 4-bit weights, 16-bit inputs, no branch; the
    other layers stay W4A4, and the checkpoint reloads them as they were."""
    from svdtune.quant.config import ADALN_W4A16
    from svdtune.quant.quantize import size_summary

    cfg = QuantConfig(**FAST, weight_only=list(ADALN_W4A16))
    model, inputs, stats = calibrated("flux", cfg)
    reference = run(model, inputs(seed=2))
    quantize(model, cfg, calibration=stats)
    specs = {n: m.spec for n, m in model.named_modules() if isinstance(m, SVDQuantLinear)}
    modulation = {n for n in specs if n.rsplit(".", 2)[-2].startswith("norm")}
    assert modulation >= {"transformer_blocks.0.norm1.linear", "single_transformer_blocks.0.norm.linear",
                          "norm_out.linear"}
    assert all(specs[n].activations == "none" and specs[n].rank == 0 and specs[n].weights == "int4" for n in modulation)
    assert specs["transformer_blocks.0.attn.to_q"].activations == "int4" and specs["transformer_blocks.0.attn.to_q"].rank == 8
    assert torch.equal(model.get_submodule("transformer_blocks.0.norm1.linear").smooth,
                       torch.ones(specs["transformer_blocks.0.norm1.linear"].in_channels))
    out = run(model, inputs(seed=2))
    assert sqnr_db(reference, out) > 12

    w4a4_only, _, stats = calibrated("flux", QuantConfig(**FAST))
    quantize(w4a4_only, QuantConfig(**FAST), calibration=stats)
    assert size_summary(model)["denoiser_quantized_bytes"] < size_summary(w4a4_only)["denoiser_quantized_bytes"]

    save_quantized(model, tmp_path, source="tiny-flux")
    assert torch.equal(run(load_quantized(tmp_path), inputs(seed=2)), out)


def test_config_yaml_json_roundtrip(tmp_path):
    from svdtune.config import load_config, save_config

    cfg = QuantConfig(method="svdquant", rank=16, weights="nvfp4", activations="nvfp4", group_size=16)
    save_config(cfg, tmp_path, "q.yaml")
    assert load_config(QuantConfig, tmp_path / "q.yaml") == cfg
    assert QuantConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("override,message", [
    ("method=gptq", "method: 'gptq' is not allowed"),
    ("rank=-1", "rank must be >= 0"),
    ("method=rtn rank=8", "has no low-rank branch"),
    ("weights=nvfp4 group_size=64", "nvfp4 uses groups of 16"),
    ("version=9", "version 9 is not supported"),
    ("exclude=['(']", "not a valid regex"),
    ("weight_only=['[']", "weight_only pattern '\\[' is not a valid regex"),
])
def test_bad_configs_are_named(override, message):
    from svdtune.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(QuantConfig, None, override.split())


def test_layers_left_16_bit_say_why():
    model = torch.nn.Sequential(torch.nn.Linear(128, 8), torch.nn.Linear(8, 77), torch.nn.Linear(77, 8))
    _, skipped = select_layers(model, QuantConfig(include=[".*"], exclude=[]).resolved())
    assert skipped == {"1": "8 input channels are not a multiple of the group size 64",
                       "2": "77 input channels are not a multiple of the group size 64"}
    _, skipped = select_layers(model, QuantConfig(include=[".*"], exclude=[], group_size=0).resolved())
    assert skipped == {"2": "its group of 77 channels is odd: 4-bit codes are packed two to a byte"}
    layers, skipped = select_layers(model, QuantConfig(include=[".*"], exclude=[], method="w8a8").resolved())
    assert set(layers) == {"0", "1", "2"} and not skipped  # int8 codes are not packed
