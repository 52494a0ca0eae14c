"""The svdq layout: padded pack / unpack round-trips exactly over random shapes; artifacts reload
to the same model; broken artifacts are refused with the file and tensor named."""

import json
import random

import pytest
import torch

from svdtune.errors import UserError
from svdtune.kernels.artifact import MANIFEST, WEIGHTS, load_svdq, save_svdq
from svdtune.kernels.format import RANK_MULTIPLE, TILE, pack_layer, padded_sizes, unpack_layer
from svdtune.quant.config import ADALN_W4A16
from svdtune.quant.linear import LayerSpec, SVDQuantLinear, set_backend
from svdtune.quant.metrics import sqnr_db
from tests.quant.tiny_models import quantized as quantized_model


def random_layer(rng: random.Random, weights: str) -> SVDQuantLinear:
    """A layer of random shape (K and N off the tile sizes) and random codes, scales and branch."""
    group = 16 if weights == "nvfp4" else rng.choice([32, 64])
    conv = rng.random() < 0.3
    spec = LayerSpec(in_channels=group * rng.randint(1, 5), out_channels=rng.randint(1, 150), rank=rng.randint(0, 40),
                     weights=weights, activations=weights, group_size=group, bias=rng.random() < 0.7,
                     act_clip=rng.random() < 0.4,
                     **(dict(kernel_size=(3, 3), padding=(1, 1)) if conv else {}))
    layer = SVDQuantLinear(spec)
    g = torch.Generator().manual_seed(rng.randint(0, 10**6))
    with torch.no_grad():
        layer.qweight.copy_(torch.randint(0, 256, layer.qweight.shape, generator=g, dtype=torch.uint8))
        layer.wscales.copy_((torch.rand(layer.wscales.shape, generator=g) + 0.01).to(layer.wscales.dtype))
        if layer.wtensor_scale is not None:
            layer.wtensor_scale.fill_(0.37)
        if layer.act_clip is not None:
            layer.act_clip.copy_(torch.rand(spec.act_groups, generator=g) * 0.5 + 0.5)
        layer.smooth.copy_(torch.rand(spec.in_channels, generator=g) * 4 + 0.25)
        for t in (layer.down, layer.up) + ((layer.bias,) if layer.bias is not None else ()):
            t.copy_(torch.randn(t.shape, generator=g))
    return layer.to(torch.bfloat16)


@pytest.mark.parametrize("weights", ["int4", "nvfp4"])
def test_pack_unpack_roundtrip_over_random_shapes(weights):
    rng = random.Random(weights)
    for _ in range(25):
        layer = random_layer(rng, weights)
        s, p = layer.spec, padded_sizes(layer.spec)
        packed = pack_layer(layer, torch.bfloat16)
        assert p["k"] % TILE == 0 and p["n"] % TILE == 0 and p["rank"] % RANK_MULTIPLE == 0 and p["k"] % p["group"] == 0
        assert packed["qweight"].shape == (p["n"], p["k"] // 2) and packed["proj_up"].shape == (p["rank"], p["n"])
        # padding contributes nothing
        assert not packed["proj_up"][s.rank:].any() and not packed["proj_down"][s.in_features:].any()
        assert not packed["qweight"][s.out_channels:].any()
        back = unpack_layer(packed, s, torch.bfloat16)
        assert ("act_clip" in packed) == s.act_clip
        for key in ("qweight", "wscales", "smooth", "bias", "wtensor_scale", "act_clip"):
            if key in back:
                assert torch.equal(back[key], layer.state_dict()[key]), key
        # the branch goes through down / lambda in 16-bit and back: 16-bit rounding, no more
        for key in ("down", "up"):
            if layer.spec.rank:
                assert sqnr_db(layer.state_dict()[key].float(), back[key].float()) > 45, key
        assert torch.equal(pack_layer(_rebuilt(s, back), torch.bfloat16)["proj_up"], packed["proj_up"])


def _rebuilt(spec, buffers):
    layer = SVDQuantLinear(spec, dtype=torch.bfloat16)
    layer.load_state_dict(buffers, strict=False)
    return layer


def _specs(model) -> dict:
    return {n: m.spec for n, m in model.named_modules() if isinstance(m, SVDQuantLinear)}


@pytest.mark.parametrize("name,overrides", [("pixart", {}), ("flux", {"weight_only": list(ADALN_W4A16)})])
def test_artifact_reloads_to_the_same_model(name, overrides, tmp_path):
    model, _, inputs = quantized_model(name, **overrides)
    x = inputs(seed=2)
    with torch.no_grad():
        expected = set_backend(model, "reference")(**x).sample
    save_svdq(model, tmp_path, extra={"source": f"tiny-{name}"})
    loaded = set_backend(load_svdq(tmp_path), "reference")
    with torch.no_grad():
        out = loaded(**x).sample
    assert loaded.svdtune_artifact["source"] == f"tiny-{name}"
    assert _specs(loaded) == _specs(model)
    assert sqnr_db(expected, out) > 35  # only the 16-bit rounding of the stored branch and 16-bit layers


def test_broken_artifacts_are_named(tmp_path):
    model, _, _ = quantized_model("sd3")
    save_svdq(model, tmp_path)
    data = (tmp_path / WEIGHTS).read_bytes()

    manifest = json.loads((tmp_path / MANIFEST).read_text())
    (tmp_path / MANIFEST).write_text(json.dumps(manifest | {"format_version": 99}))
    with pytest.raises(UserError, match=r"svdq_manifest.json: format_version is 99"):
        load_svdq(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))

    (tmp_path / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"svdq.safetensors: not a readable safetensors file"):
        load_svdq(tmp_path)

    layer = "transformer_blocks.0.attn.to_q"
    bad = dict(manifest)
    bad["layers"] = dict(manifest["layers"])
    bad["layers"][layer] = manifest["layers"][layer] | {"rank": 40}
    (tmp_path / WEIGHTS).write_bytes(data)
    (tmp_path / MANIFEST).write_text(json.dumps(bad))
    with pytest.raises(UserError, match=rf"svdq.safetensors: tensor {layer}.proj_down has shape \(64, 16\), expected \(64, 48\)"):
        load_svdq(tmp_path)

    with pytest.raises(UserError, match=r"is not an svdq artifact \(no svdq_manifest.json"):
        load_svdq(tmp_path / "nowhere")
