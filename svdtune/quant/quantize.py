"""`quantize(model_or_pipeline, config)`: calibrate, then fit and swap in `SVDQuantLinear` layer by layer.

    pipe = load_pipeline("ref-dit")
    quantize(pipe, QuantConfig())                      # SVDQuant W4A4, rank 32, calibrated on captions
    quantize(pipe.transformer, QuantConfig(method="rtn"), calibration=stats)   # reuse statistics

Works on any diffusers denoiser (UNet2DConditionModel, FLUX / SD3 / PixArt / SANA transformers):
layers are found by type (nn.Linear, 1x1 nn.Conv2d, and k x k convolutions with `conv3x3`) and
filtered by the config's include / exclude / weight_only regexes on their qualified names.
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import nn
from tqdm.auto import tqdm

from svdtune.errors import UserError
from svdtune.quant.calibrate import LayerStats, calibrate, calibration_prompts
from svdtune.quant.config import QuantConfig
from svdtune.quant.linear import SVDQuantLinear
from svdtune.quant.svdquant import fit_layer


@dataclasses.dataclass
class QuantReport:
    """What `quantize` did: kept on the model as `model.svdtune_quant`."""
    config: QuantConfig                               # resolved
    layers: dict[str, float]                          # name -> relative output error on the sample
    skipped: dict[str, str]                           # name -> why it stayed 16-bit
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)  # calibrate, fit


def denoiser_of(model_or_pipe) -> nn.Module:
    from svdtune.pipelines import denoiser_attr

    return model_or_pipe if isinstance(model_or_pipe, nn.Module) else getattr(model_or_pipe, denoiser_attr(model_or_pipe))


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """(N, K) view of a Linear / Conv2d weight, K ordered (kernel position, input channel)."""
    w = module.weight.detach()
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1) if isinstance(module, nn.Conv2d) else w


def select_layers(model: nn.Module, cfg: QuantConfig) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Layers to quantize, and the candidates left in 16-bit with the reason (`cfg` resolved)."""
    layers, skipped = {}, {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            channels = m.in_features
        elif isinstance(m, nn.Conv2d) and m.groups == 1 and (m.kernel_size == (1, 1) or cfg.conv3x3):
            channels = m.in_channels
        else:
            continue
        layer_cfg = cfg.layer_config(name)
        if layer_cfg is None:
            continue
        group = layer_cfg.group_size or channels
        if channels % group:
            skipped[name] = f"{channels} input channels are not a multiple of the group size {group}"
            continue
        if group % 2 and layer_cfg.weights != "int8":
            skipped[name] = f"its group of {group} channels is odd: 4-bit codes are packed two to a byte"
            continue
        layers[name] = m
    return layers, skipped


def is_world_pipeline(pipe) -> bool:
    from svdtune.pipelines import is_world_model

    path = getattr(pipe, "name_or_path", None) or pipe.config.get("_name_or_path", "")
    return bool(path) and is_world_model(path)


def quantize(model_or_pipe, config: QuantConfig, calibration: dict[str, LayerStats] | None = None,
             prompts: list[str] | None = None) -> nn.Module:
    """Quantize the denoiser of `model_or_pipe` in place and return it.

    Without `calibration`, the pipeline is run on `prompts` (default: `config.calibration`'s
    captions) to collect it; pass the statistics to compare methods on identical inputs.
    """
    config.validate()
    cfg = config.resolved()
    model = denoiser_of(model_or_pipe)
    layers, skipped = select_layers(model, cfg)
    if not layers:
        raise UserError(f"no layer of {type(model).__name__} matches include={cfg.include} minus exclude, "
                        f"or weight_only={cfg.weight_only}")
    seconds = {}
    if calibration is None:
        if isinstance(model_or_pipe, nn.Module):
            raise UserError("quantize needs a pipeline to calibrate on, or `calibration` statistics")
        start = time.time()
        prompts = prompts or calibration_prompts(cfg.calibration, is_world_pipeline(model_or_pipe))
        calibration = calibrate(model_or_pipe, layers, prompts, cfg.calibration, gram=cfg.gptq)
        seconds["calibrate"] = round(time.time() - start, 2)
    if cfg.gptq and any(s.gram is None for s in calibration.values()):
        raise UserError("gptq needs each layer's x^T x over the calibration: collect the statistics with a "
                        "gptq config (collect_statistics) or Recording(..., gram=True), or let quantize calibrate")
    start, errors = time.time(), {}
    for name in tqdm(list(layers), desc="quantize", unit="layer"):
        module = layers.pop(name)  # drop our reference: the 16-bit layer is freed once replaced
        stats = calibration.get(name)
        if stats is None:
            raise UserError(f"no calibration statistics for layer {name!r}")
        gram = stats.gram / stats.seen if stats.gram is not None else None
        try:
            fit = fit_layer(weight_matrix(module), stats.sample, stats.absmax, stats.min, cfg.layer_config(name), gram)
        except (RuntimeError, ValueError) as e:  # a failed Cholesky (GPTQ), a NaN in the statistics
            raise RuntimeError(f"quantizing layer {name!r} ({type(module).__name__}, weight "
                               f"{tuple(module.weight.shape)}) failed: {e}") from e
        model.set_submodule(name, SVDQuantLinear.from_float(module, fit))
        errors[name] = fit.output_error ** 0.5
    seconds["fit"] = round(time.time() - start, 2)
    model.svdtune_quant = QuantReport(cfg, errors, skipped, seconds)
    return model


def collect_statistics(pipe, config: QuantConfig, prompts: list[str] | None = None) -> dict[str, LayerStats]:
    """Calibration statistics for every layer `config` would quantize (run once, reuse per method)."""
    cfg = config.resolved()
    # Per-channel groups select every candidate, so the statistics serve any group size.
    layers, _ = select_layers(denoiser_of(pipe), dataclasses.replace(cfg, group_size=0))
    prompts = prompts or calibration_prompts(cfg.calibration, is_world_pipeline(pipe))
    return calibrate(pipe, layers, prompts, cfg.calibration, gram=cfg.gptq)



def size_summary(model: nn.Module) -> dict[str, float]:
    """Bytes of the quantized layers as stored (codes and scales exactly, smoothing, branch and bias
    in 16-bit) against the same layers in 16-bit; and the whole denoiser, 16-bit vs quantized."""
    quantized = fp16 = 0
    layers = [m for m in model.modules() if isinstance(m, SVDQuantLinear)]
    for m in layers:
        s = m.spec
        quantized += sum(t.numel() * (t.element_size() if n in m.STORAGE else 2) for n, t in m.named_buffers())
        quantized += 2 * s.out_channels if s.bias else 0
        fp16 += 2 * (s.out_channels * s.in_features + (s.out_channels if s.bias else 0))
    in_layers = {id(p) for m in layers for p in m.parameters()}
    rest = 2 * sum(p.numel() for p in model.parameters() if id(p) not in in_layers)
    return {"quantized_layers_bytes": quantized, "same_layers_fp16_bytes": fp16,
            "layers_ratio": quantized / fp16 if fp16 else float("nan"),
            "denoiser_fp16_bytes": rest + fp16, "denoiser_quantized_bytes": rest + quantized}


def plan(model: nn.Module, config: QuantConfig) -> nn.Module:
    """Swap in empty `SVDQuantLinear` shells of the shapes `quantize` would produce, without
    calibrating or fitting (a dry run; works on the meta device). Returns the model."""
    config.validate()
    cfg = config.resolved()
    layers, skipped = select_layers(model, cfg)
    device = next(model.parameters()).device
    for name, m in layers.items():
        channels = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
        layer_cfg = cfg.layer_config(name)
        rank = min(layer_cfg.rank, m.weight.shape[0], m.weight[0].numel())
        spec = SVDQuantLinear.spec_for(m, rank, layer_cfg.weights, layer_cfg.activations,
                                       layer_cfg.group_size or channels)
        model.set_submodule(name, SVDQuantLinear(spec, dtype=m.weight.dtype, device=device))
    model.svdtune_quant = QuantReport(cfg, {}, skipped)
    return model
