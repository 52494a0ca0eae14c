"""LoRA on SVDQuant layers: peft's adapter API, exact merge into the branch, save / load, LoftQ init."""

import re

import pytest
import torch

from svdtune.errors import UserError
from svdtune.quant.linear import SVDQuantLinear
from svdtune.quant.metrics import relative_error, sqnr_db
from svdtune.train.init import init_adapter
from svdtune.train.lora import (all_lora_layers, attach, load_adapter, lora_config, lora_layers, save_adapter,
                                 trainable_parameters)
from tests.quant.tiny_models import quantized


def run(model, kw):
    with torch.no_grad():
        return model(**kw, return_dict=False)[0]


def randomize(model, adapter, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in all_lora_layers(model).values():
            for w in (layer.lora_A[adapter].weight, layer.lora_B[adapter].weight):
                w.copy_(0.05 * torch.randn(w.shape, generator=g))


def test_adapter_api_merge_and_unmerge():
    # 16-bit activations (W4A16): with 4-bit ones, float-rounding differences of an exact merge
    # flip a few activation codes downstream, which hides what is checked here.
    model, _, inputs = quantized("unet-sdxl", activations="none")
    kw = inputs(seed=3)
    base_out = run(model, kw)
    ranks = {n: m.spec.rank for n, m in model.named_modules() if isinstance(m, SVDQuantLinear)}
    attach(model, lora_config(model, rank=4, alpha=8), "a")
    attach(model, lora_config(model, rank=2), "b")
    assert len(lora_layers(model)) == len(ranks)
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "lora_" in n)
    assert torch.equal(run(model, kw), base_out)  # B = 0: starts as the 4-bit model
    randomize(model, "a", seed=1)
    randomize(model, "b", seed=2)
    model.set_adapter("a")
    out_a = run(model, kw)
    assert sqnr_db(base_out, out_a) < 40  # the adapter changes the output
    model.set_adapter("b")
    assert not torch.allclose(run(model, kw), out_a)
    model.disable_adapters()
    assert torch.equal(run(model, kw), base_out)
    model.enable_adapters()
    model.set_adapter("a")
    assert torch.equal(run(model, kw), out_a)
    g = torch.Generator().manual_seed(0)
    for layer in lora_layers(model).values():  # merging is exact layer by layer
        x = torch.randn(3, 5, layer.in_features, generator=g)
        with torch.no_grad():
            before, _ = layer(x), layer.merge()
            assert relative_error(layer(x), before) < 1e-5
    assert relative_error(run(model, kw), out_a) < 1e-5
    assert all(m.spec.rank == ranks[n.removesuffix(".base_layer")] + 4
               for n, m in model.named_modules() if isinstance(m, SVDQuantLinear))
    for layer in lora_layers(model).values():
        layer.unmerge()
    assert {n.removesuffix(".base_layer"): m.spec.rank for n, m in model.named_modules()
            if isinstance(m, SVDQuantLinear)} == ranks
    assert torch.equal(run(model, kw), out_a)


def test_only_adapter_weights_train():
    model, _, inputs = quantized("sd3")
    attach(model, lora_config(model, rank=4))
    randomize(model, "default")
    trainable_parameters(model)
    run_kw = inputs(seed=0)
    out = model(**run_kw, return_dict=False)[0]
    out.pow(2).mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values())
    # The last SD3 block discards its text stream: only adapters feeding it get no signal.
    silent = {n for n, g in grads.items() if g.abs().sum() == 0}
    assert silent and all(n.startswith("transformer_blocks.1.") and ("add_" in n or "context" in n) for n in silent), silent
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)


def test_learned_activation_clip_trains_saves_and_merges(tmp_path):
    """An adapter's activation clips train only when asked (lora.act_clip), change the 4-bit model,
    save and load with the adapter, and merge into the layers exactly (unmerge restores them);
    merged adapters' clips average."""
    model, _, inputs = quantized("flux")
    attach(model, lora_config(model, rank=4), "style")
    randomize(model, "style")
    kw = inputs(seed=5)
    clips = [n for n, _ in model.named_parameters() if "lora_act_clip" in n]
    trainable_parameters(model)
    assert clips and not any("lora_act_clip" in n for n, p in model.named_parameters() if p.requires_grad)
    unclipped = run(model, kw)
    trainable_parameters(model, act_clip=True)
    model(**kw, return_dict=False)[0].pow(2).mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if "lora_act_clip" in n}
    assert set(grads) == set(clips) and sum(bool(g.abs().sum() > 0) for g in grads.values()) > len(clips) // 2
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_act_clip["style"].copy_(torch.rand(layer.lora_act_clip["style"].shape, generator=g) * 0.3 + 0.7)
    clipped = run(model, kw)
    assert sqnr_db(unclipped, clipped) < 60  # the clips act on the 4-bit activations
    save_adapter(model, tmp_path / "adapter", "style")
    fresh, _, _ = quantized("flux")
    load_adapter(fresh, tmp_path / "adapter", "style")
    assert torch.equal(run(fresh, kw), clipped)
    g = torch.Generator().manual_seed(0)
    for layer in lora_layers(fresh).values():
        x = torch.randn(2, 5, layer.in_features, generator=g)
        with torch.no_grad():
            before, _ = layer(x), layer.merge()
            assert torch.equal(layer.get_base_layer().act_clip, layer.lora_act_clip["style"])
            assert relative_error(layer(x), before) < 1e-5
            layer.unmerge()
            assert layer.get_base_layer().act_clip is None and not layer.get_base_layer().spec.act_clip
    attach(fresh, lora_config(fresh, rank=4), "plain")  # learned no clip (ones): several adapters' clips average
    layer = next(iter(lora_layers(fresh).values()))
    with torch.no_grad():
        layer.merge(adapter_names=["style", "plain"])
        assert torch.allclose(layer.get_base_layer().act_clip, (layer.lora_act_clip["style"] + 1) / 2)


def test_save_and_load_adapter(tmp_path):
    model, _, inputs = quantized("flux")
    attach(model, lora_config(model, rank=4), "style")
    randomize(model, "style")
    expected = run(model, inputs(seed=4))
    save_adapter(model, tmp_path / "adapter", "style")
    fresh, _, _ = quantized("flux")
    load_adapter(fresh, tmp_path / "adapter", "style")
    assert torch.equal(run(fresh, inputs(seed=4)), expected)
    with pytest.raises(UserError, match="not an adapter folder"):
        load_adapter(fresh, tmp_path, "x")
    other, _, _ = quantized("sd3")
    with pytest.raises(UserError, match="is not a layer of this model"):
        load_adapter(other, tmp_path / "adapter", "style")


def test_16_bit_layers_take_peft_lora_beside_the_quantized_ones(tmp_path):
    """lora.target_16bit adapts unquantized linear layers (here SD3's AdaLN modulation) with peft's
    own LoRA: they train, save and load with the rest, and LoftQ init leaves them at B = 0."""
    model, reference, inputs = quantized("sd3")
    adaln = r"norm1(_context)?\.linear$"
    with pytest.raises(UserError, match="no 16-bit linear layer matches"):
        lora_config(model, rank=4, target_16bit=r"no_such_layer$")
    attach(model, lora_config(model, rank=4, target_16bit=adaln))
    plain = {n for n, m in all_lora_layers(model).items() if n not in lora_layers(model)}
    assert plain and all(re.search(adaln, n) for n in plain)
    init_adapter(model, reference, method="loftq")
    assert all(torch.all(all_lora_layers(model)[n].lora_B["default"].weight == 0) for n in plain)
    kw = inputs(seed=6)
    trainable_parameters(model)
    model(**kw, return_dict=False)[0].pow(2).mean().backward()
    assert all(all_lora_layers(model)[n].lora_B["default"].weight.grad.abs().sum() > 0 for n in plain)
    randomize(model, "default")
    expected = run(model, kw)
    save_adapter(model, tmp_path / "adapter")
    fresh, _, _ = quantized("sd3")
    load_adapter(fresh, tmp_path / "adapter")
    assert set(all_lora_layers(fresh)) == set(all_lora_layers(model))
    assert torch.equal(run(fresh, kw), expected)


def test_an_adapter_on_16_bit_layers_only():
    """lora.target "" leaves the quantized layers alone: only the AdaLN modulation is adapted,
    LoftQ init accepts it (B = 0), and an adapter with no layer at all is refused."""
    model, reference, _ = quantized("sd3")
    with pytest.raises(UserError, match="both empty"):
        lora_config(model, rank=4, target="")
    attach(model, lora_config(model, rank=4, target="", target_16bit=r"norm1\.linear$"))
    assert not lora_layers(model) and all_lora_layers(model)
    assert init_adapter(model, reference, method="loftq") == {}
    assert all(torch.all(m.lora_B["default"].weight == 0) for m in all_lora_layers(model).values())


@pytest.mark.parametrize("name", ["unet-sd15", "pixart"])
def test_loftq_init_moves_the_model_towards_16_bit(name):
    """LoftQ starts closer to the 16-bit weights than zero init, and so closer in output when
    weights are the only error (W4A16 here); the re-quantizing alternation is at least as close."""
    model, reference, inputs = quantized(name, activations="none")
    kw = inputs(seed=5)
    target = run(reference, kw)
    attach(model, lora_config(model, rank=4))
    errors, quality = {}, {}
    for method in ("zero", "loftq", "loftq-requant"):
        errors[method] = init_adapter(model, reference, method=method)
        quality[method] = sqnr_db(target, run(model, kw))
    for layer_name, zero in errors["zero"].items():
        assert errors["loftq"][layer_name] < zero
        assert errors["loftq-requant"][layer_name] <= errors["loftq"][layer_name] + 1e-6
    # Quantization noise is nearly white: r' = 4 of 64-128 directions can only remove a few %.
    assert quality["loftq"] > quality["zero"] + 0.1
    assert quality["loftq-requant"] > quality["zero"] + 0.1


def test_loftq_init_with_a_rank_above_a_layers_width():
    """A layer narrower than the adapter's rank takes its whole weight error into the adapter; the
    spare directions start as zero init (B = 0), so they still get gradients."""
    model, reference, _ = quantized("unet-sd15", activations="none")
    widths = {n: min(m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, SVDQuantLinear)}
    rank = min(widths.values()) + 4
    attach(model, lora_config(model, rank=rank))
    errors = init_adapter(model, reference, method="loftq")
    for name, layer in lora_layers(model).items():
        if widths[name] < rank:
            assert errors[name] < 1e-5, name
            assert torch.all(layer.lora_B["default"].weight[:, widths[name]:] == 0)
