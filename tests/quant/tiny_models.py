"""Tiny random-weight denoisers of every supported diffusers class, with matching forward inputs."""

from __future__ import annotations

import copy

import torch

from svdtune.quant.calibrate import Recording
from svdtune.quant.config import QuantConfig
from svdtune.quant.quantize import quantize, select_layers

FAST = dict(rank=8, smooth_alphas=[0.3, 0.5, 0.7], shrink_grid=[1.0, 0.9], lowrank_iters=2)


def _unet(sdxl: bool):
    from diffusers import UNet2DConditionModel

    extra = dict(addition_embed_type="text_time", addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=32 + 6 * 8) if sdxl else {}
    model = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(64, 128), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=16, norm_num_groups=16,
        transformer_layers_per_block=(1, 2) if sdxl else 1, use_linear_projection=sdxl, **extra)

    def inputs(batch=2, seed=0):
        g = torch.Generator().manual_seed(seed)
        kw = dict(sample=torch.randn(batch, 4, 8, 8, generator=g), timestep=torch.tensor([500] * batch),
                  encoder_hidden_states=torch.randn(batch, 7, 64, generator=g))
        if sdxl:
            kw["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, 32, generator=g),
                                       "time_ids": torch.tensor([[8, 8, 0, 0, 8, 8]] * batch, dtype=torch.float32)}
        return kw

    return model, inputs


def _flux():
    from diffusers import FluxTransformer2DModel

    model = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                   attention_head_dim=16, num_attention_heads=4, joint_attention_dim=64,
                                   pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6))

    def inputs(batch=2, seed=0):
        g = torch.Generator().manual_seed(seed)
        img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1).reshape(-1, 3)
        return dict(hidden_states=torch.randn(batch, 16, 16, generator=g),
                    encoder_hidden_states=torch.randn(batch, 7, 64, generator=g),
                    pooled_projections=torch.randn(batch, 32, generator=g), timestep=torch.tensor([0.5] * batch),
                    img_ids=img_ids, txt_ids=torch.zeros(7, 3), guidance=torch.tensor([3.5] * batch))

    return model, inputs


def _sd3():
    from diffusers import SD3Transformer2DModel

    model = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=16,
                                  num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=64,
                                  pooled_projection_dim=32, out_channels=4, pos_embed_max_size=8)

    def inputs(batch=2, seed=0):
        g = torch.Generator().manual_seed(seed)
        return dict(hidden_states=torch.randn(batch, 4, 8, 8, generator=g),
                    encoder_hidden_states=torch.randn(batch, 7, 64, generator=g),
                    pooled_projections=torch.randn(batch, 32, generator=g), timestep=torch.tensor([500] * batch))

    return model, inputs


def _pixart():
    from diffusers import PixArtTransformer2DModel

    model = PixArtTransformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=8, num_layers=2,
                                     attention_head_dim=16, num_attention_heads=4, cross_attention_dim=64,
                                     caption_channels=64, norm_type="ada_norm_single", num_embeds_ada_norm=1000,
                                     use_additional_conditions=False)

    def inputs(batch=2, seed=0):
        g = torch.Generator().manual_seed(seed)
        return dict(hidden_states=torch.randn(batch, 4, 8, 8, generator=g),
                    encoder_hidden_states=torch.randn(batch, 7, 64, generator=g), timestep=torch.tensor([500] * batch),
                    added_cond_kwargs={"resolution": None, "aspect_ratio": None})

    return model, inputs


def _sana():
    from diffusers import SanaTransformer2DModel

    model = SanaTransformer2DModel(in_channels=4, out_channels=4, num_attention_heads=4, attention_head_dim=16,
                                   num_layers=2, num_cross_attention_heads=4, cross_attention_head_dim=16,
                                   cross_attention_dim=64, caption_channels=64, mlp_ratio=2.5, sample_size=8, patch_size=1)

    def inputs(batch=2, seed=0):
        g = torch.Generator().manual_seed(seed)
        return dict(hidden_states=torch.randn(batch, 4, 8, 8, generator=g),
                    encoder_hidden_states=torch.randn(batch, 7, 64, generator=g), timestep=torch.tensor([500] * batch))

    return model, inputs


BUILDERS = {
    "unet-sd15": lambda: _unet(sdxl=False), "unet-sdxl": lambda: _unet(sdxl=True), "flux": _flux,
    "sd3": _sd3, "pixart": _pixart, "sana": _sana,
}


def build(name: str):
    """(model in eval mode with fixed random weights, inputs(batch, seed) -> forward kwargs)."""
    torch.manual_seed(0)
    model, inputs = BUILDERS[name]()
    return model.eval(), inputs


def calibrated(name: str, cfg: QuantConfig):
    """(16-bit model, inputs, calibration statistics from one forward on inputs(seed=1))."""
    model, inputs = build(name)
    layers, _ = select_layers(model, cfg.resolved())
    with torch.no_grad(), Recording(layers, sample_tokens=64, gram=cfg.gptq) as rec:
        model(**inputs(seed=1))
    return model, inputs, rec.stats()


def quantized(name: str, **overrides):
    """(W4A4 model, its 16-bit original, inputs) with the fast test config."""
    cfg = QuantConfig(**(FAST | overrides))
    model, inputs, stats = calibrated(name, cfg)
    reference = copy.deepcopy(model)
    return quantize(model, cfg, calibration=stats), reference, inputs
