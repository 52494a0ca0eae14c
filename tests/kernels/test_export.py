"""`svdtune export` on a real (tiny) training run: svdq-merged is the trained model, folded is
close to it, the standard LoRA loads into the 16-bit pipeline with diffusers and does what the
adapter does there."""

import json
import statistics

import pytest
import torch
import torch.nn.functional as Fn

from svdtune.cli import main
from svdtune.config import load_config
from svdtune.kernels.artifact import load_svdq
from svdtune.kernels.export import LORA_WEIGHTS, ExportConfig, run_export
from svdtune.pipelines import load_pipeline
from svdtune.quant.linear import SVDQuantLinear, set_backend
from svdtune.quant.metrics import relative_error
from svdtune.train.lora import all_lora_layers
from svdtune.train.recipe import train_adapter
from svdtune.train.student import load_trained
from tests.train.test_recipe import config


@pytest.fixture(scope="module")
def run(tiny_family, tmp_path_factory):
    from svdtune.data.build import DataBuildConfig, run_data_build

    root = tmp_path_factory.mktemp("export")
    run_data_build(DataBuildConfig(domain="pastel", sources={"world": "12"}, embeddings=False,
                                   output_dir=str(root / "pastel")))
    # a 16-bit layer adapted too (peft's own LoRA): it merges into its weight, exports as plain LoRA;
    # activation clips learned too: they merge into the layers
    return train_adapter(config(tiny_family, root / "pastel", root / "run", "validation.at_start=false",
                                r"lora.target_16bit=time_embedding\.linear_2$", "lora.act_clip=true"))


def denoiser_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(sample=torch.randn(2, 4, 24, 24, generator=g), timestep=torch.tensor([700, 300]),
                encoder_hidden_states=torch.randn(2, 48, 128, generator=g))


def forward(model):
    with torch.no_grad():
        return model(**denoiser_inputs()).sample


def export(run, tmp_path, fmt, *extra):
    return run_export(load_config(ExportConfig, None, [f"runs={json.dumps([str(run)])}", f"format={fmt}",
                                                       f"output_dir={tmp_path / fmt}", *extra]))


def layer_inputs(model, layers: dict) -> dict:
    """The input each of `layers` (name -> module) sees in one forward pass of `model`."""
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda m, args, n=n: seen.setdefault(n, args[0])) for n, m in layers.items()]
    forward(model)
    for h in hooks:
        h.remove()
    assert seen.keys() == layers.keys()
    return seen


def test_svdq_merged_is_the_trained_model_and_folded_is_close(run, tmp_path):
    """Layer by layer, on the inputs the trained model feeds them. (Whole models are not compared:
    fp32 rounding differences of an exact merge flip a few 4-bit activation codes downstream, which
    the tiny model amplifies to several % of its output.)"""
    trained, _ = load_trained(run)
    adapted = all_lora_layers(trained)
    assert "time_embedding.linear_2" in adapted  # a 16-bit layer: merged into its weight
    inputs = layer_inputs(trained, adapted)
    merged = load_svdq(export(run, tmp_path, "svdq-merged"))  # dtype auto: fp32, the model's
    folded = load_svdq(export(run, tmp_path, "folded"))
    assert not any("lora" in n for n, _ in merged.named_modules())
    layers = {n: m for n, m in merged.named_modules() if isinstance(m, SVDQuantLinear)}
    assert {m.spec.rank for m in layers.values()} == {4 + 2}  # quant.rank + lora.rank, concatenated
    assert any(m.spec.act_clip for m in layers.values())  # the learned clips travel with the artifact
    with torch.no_grad():
        expected = {n: adapted[n](x) for n, x in inputs.items()}
        merged_errors = [relative_error(expected[n], merged.get_submodule(n)(x)) for n, x in inputs.items()]
        folded_errors = [relative_error(expected[n], folded.get_submodule(n)(x)) for n, x in inputs.items()]
    print(f"per-layer relative error vs the trained model: svdq-merged max {max(merged_errors):.2e}, "
          f"folded median {statistics.median(folded_errors):.2e}")
    assert max(merged_errors) < 1e-5
    assert max(merged_errors) < statistics.median(folded_errors) < 0.2
    # the kernels run the artifact: each layer's CPU exact path is the reference up to fp32 rounding
    with torch.no_grad():
        for name, x in layer_inputs(merged, layers).items():
            layer = layers[name]
            reference, exact = set_backend(layer, "reference")(x), set_backend(layer, "cpu-exact")(x)
            assert relative_error(reference, exact) < 1e-5


@pytest.mark.parametrize("fmt", ["lora", "kohya"])
def test_standard_lora_loads_into_the_16_bit_pipeline(run, tiny_family, tmp_path, fmt):
    """diffusers' load_lora_weights takes the export, and the 16-bit UNet then computes
    W x + B A x on every adapted layer (checked against hooks that add B A x by hand)."""
    out = export(run, tmp_path, fmt, "dtype=float16")
    pipe = load_pipeline(str(tiny_family[1] / "ref-unet"))
    base = forward(pipe.unet)

    trained, _ = load_trained(run)

    def add_delta(layer, a, b):  # y + B A x; a k x k conv's A is a k x k conv, its B a 1 x 1 one
        base = layer.get_base_layer()
        if not isinstance(base, SVDQuantLinear) or base.spec.kernel_size is None:
            return lambda m, args, y: y + args[0] @ a.T @ b.T
        return lambda m, args, y: y + Fn.conv2d(base._conv(args[0], base.as_conv_weight(a)), b[:, :, None, None])

    hooks = []
    for name, layer in all_lora_layers(trained).items():
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight * layer.scaling["default"]
        a, b = a.half().float(), b.half().float()  # as exported
        hooks.append(pipe.unet.get_submodule(name).register_forward_hook(add_delta(layer, a, b)))
    by_hand = forward(pipe.unet)
    for h in hooks:
        h.remove()

    pipe.load_lora_weights(str(out), weight_name=LORA_WEIGHTS)
    with_lora = forward(pipe.unet)
    assert relative_error(base, with_lora) > 1e-3  # it changed the output
    assert relative_error(by_hand, with_lora) < 1e-4


def test_generate_runs_an_export_on_the_cpu_kernels(run, tmp_path):
    out = export(run, tmp_path, "svdq-merged")
    manifest = json.loads((out / "svdq_manifest.json").read_text())
    assert manifest["adapters"] == [{"run": str(run), "strength": 1.0}] and manifest["source"]
    assert main(["generate", "--model", str(out), "--backend", "cpu", "--prompt", "a red circle",
                 "steps=2", f"output_dir={tmp_path / 'images'}"]) == 0
    assert len(list((tmp_path / "images").glob("*.png"))) == 1


def test_export_errors_are_named(run, tmp_path, capsys):
    assert main(["export", "--run", str(tmp_path / "nowhere"), f"output_dir={tmp_path / 'x'}"]) == 2
    assert "is not a training run (no config.yaml" in capsys.readouterr().err
    assert main(["export", "--run", f"{run}:strong"]) == 2
    assert "the strength after ':' must be a number" in capsys.readouterr().err
    assert main(["export", "--run", str(run), "format=onnx"]) == 2
    assert "format 'onnx' is not one of svdq-merged" in capsys.readouterr().err


def test_several_adapters_merge_in_blocks_with_their_strengths(run, tmp_path):
    """The same run twice, at strengths 1 and 0.5, is the adapter at 1.5: two blocks of rank 2."""
    trained, _ = load_trained(run)
    for layer in all_lora_layers(trained).values():
        layer.scaling["default"] *= 1.5
    out = run_export(load_config(ExportConfig, None, [f"runs={json.dumps([str(run), f'{run}:0.5'])}",
                                                      f"output_dir={tmp_path / 'two'}"]))
    merged = load_svdq(out)
    assert {m.spec.rank for m in merged.modules() if isinstance(m, SVDQuantLinear)} == {4 + 2 + 2}
    adapted = all_lora_layers(trained)
    with torch.no_grad():
        for name, x in layer_inputs(trained, adapted).items():
            assert relative_error(adapted[name](x), merged.get_submodule(name)(x)) < 1e-5, name
