"""`svdtune export`: what a training run learnt, in the form its users run.

    svdtune export --run runs/pastel [--run runs/neon:0.5] [format=svdq-merged output_dir=runs/export]

Formats:
    svdq-merged  (default) every adapter concatenated with the low-rank branch (down = [L1 | A],
                 up = [L2 ; s B], strength folded into s): no re-quantization, exactly the trained
                 model; one svdq artifact (FORMAT.md) for the fused kernels.
    folded       EfficientDM-style: each adapter added to the dequantized residual, which is
                 re-quantized; the branch stays as it was. Smaller rank, less exact (for comparison).
    lora         standard LoRA for the 16-bit model, diffusers / peft keys
                 (`pipeline.load_lora_weights(output_dir)`), strength and alpha folded into B.
    kohya        the same LoRA with kohya / ComfyUI key names (lora_unet_*, lora_down / lora_up / alpha).
    nunchaku-keys  svdq-merged under the key names of the SVDQuant inference engine's checkpoints
                 (qweight, wscales, smooth_factor, proj_down, proj_up, bias). Names only: the engine
                 interleaves its tensors for its MMA tiles, so this file documents the mapping and
                 does not load into it as is.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from svdtune.config import atomic_save_file, atomic_write_text, save_config
from svdtune.errors import UserError
from svdtune.kernels.artifact import DTYPES, save_svdq
from svdtune.kernels.format import pack_layer
from svdtune.quant import formats as F
from svdtune.quant.config import SHRINK_GRID
from svdtune.quant.linear import SVDQuantLinear, pack_codes
from svdtune.train.lora import SVDQuantLoraLayer, all_lora_layers, merge_act_clip

FORMATS = ("svdq-merged", "folded", "lora", "kohya", "nunchaku-keys")
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # the file name diffusers' load_lora_weights looks for
NUNCHAKU_NAMES = {"qweight": "qweight", "wscales": "wscales", "wtensor_scale": "wtscale",
                  "smooth": "smooth_factor", "proj_down": "proj_down", "proj_up": "proj_up", "bias": "bias"}


@dataclasses.dataclass
class ExportConfig:
    runs: list[str] = dataclasses.field(default_factory=list)  # training run folders, "path" or "path:strength"
    format: str = "svdq-merged"
    dtype: str = "auto"  # of the artifact's branch, smoothing and unquantized tensors; auto: the model's
    output_dir: str = "runs/export"

    def validate(self):
        if not self.runs:
            raise ValueError("runs must name at least one training run folder (--run PATH[:STRENGTH])")
        if self.format not in FORMATS:
            raise ValueError(f"format {self.format!r} is not one of {', '.join(FORMATS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        for run in self.runs:
            parse_run(run)


def parse_run(text: str) -> tuple[str, float]:
    path, sep, strength = text.rpartition(":")
    if not sep or not path:
        return text, 1.0
    try:
        return path, float(strength)
    except ValueError:
        raise ValueError(f"run {text!r}: the strength after ':' must be a number") from None


def run_export(cfg: ExportConfig) -> Path:
    from svdtune.train.student import load_trained

    out = Path(cfg.output_dir)
    runs = [parse_run(r) for r in cfg.runs]
    model, train_cfg = load_trained(runs[0][0], adapter_name="adapter0")
    for i, (path, _) in enumerate(runs[1:], 1):
        add_adapter(model, path, f"adapter{i}", runs[0][0])
    strengths = {f"adapter{i}": s for i, (_, s) in enumerate(runs)}
    save_config(cfg, out)
    info = {"source": train_cfg.model, "adapters": [{"run": p, "strength": s} for p, s in runs]}
    if cfg.format in ("lora", "kohya"):
        dtype = DTYPES[cfg.dtype] or torch.float16
        return save_lora(model, out, strengths, dtype, kohya=cfg.format == "kohya", info=info)
    merged = merge_adapters(model, strengths) if cfg.format != "folded" else fold_adapters(model, strengths)
    save_svdq(merged, out, cfg.dtype, extra=info | {"export_format": cfg.format})
    if cfg.format == "nunchaku-keys":
        save_nunchaku_keys(merged, out, DTYPES[cfg.dtype] or next(merged.parameters()).dtype)
    return out


def add_adapter(model: nn.Module, run: str, name: str, first: str) -> None:
    """Attach another run's adapter. Adapters merge only when trained on the same quantized
    backbone: the same model and quantization, and no init that re-quantized it."""
    from svdtune.config import load_config, to_dict
    from svdtune.train.config import TrainConfig
    from svdtune.train.lora import load_adapter

    cfg, base = (load_config(TrainConfig, Path(r) / "config.yaml") for r in (run, first))
    for c, where in ((cfg, run), (base, first)):
        if c.lora.init == "loftq-requant":
            raise UserError(f"{where}: its init re-quantized the backbone (lora.init=loftq-requant), so its adapter "
                            "cannot be merged with another; export it alone")
    same = (cfg.model, cfg.quantized, to_dict(cfg.quant)) == (base.model, base.quantized, to_dict(base.quant))
    if not same:
        raise UserError(f"{run}: trained on another backbone than {first} (model, quantized or quant differ)")
    load_adapter(model, Path(run) / "adapter", name)


@torch.no_grad()
def merge_adapters(model: nn.Module, strengths: dict[str, float]) -> nn.Module:
    """Concatenate every adapter (times its strength) into its layer's branch (into the weight of a
    16-bit layer) and unwrap the layers."""
    for name, layer in all_lora_layers(model).items():
        model.set_submodule(name, merged_layer(layer, strengths))
    return model


def merged_layer(layer: LoraLayer, strengths: dict[str, float]) -> nn.Module:
    adapters = [a for a in strengths if a in layer.lora_A]
    for a in adapters:
        layer.scaling[a] *= strengths[a]
    layer.merge(adapter_names=adapters)
    return layer.get_base_layer()


@torch.no_grad()
def fold_adapters(model: nn.Module, strengths: dict[str, float]) -> nn.Module:
    """Add every adapter to its layer's dequantized residual and re-quantize it (branch unchanged);
    16-bit layers take theirs into their weight."""
    for name, layer in all_lora_layers(model).items():
        if not isinstance(layer, SVDQuantLoraLayer):
            model.set_submodule(name, merged_layer(layer, strengths))
            continue
        base: SVDQuantLinear = layer.get_base_layer()
        s = base.spec
        lam = base.smooth.float().repeat(s.positions)
        target = base.residual_weight(torch.float32)
        for a, strength in strengths.items():
            if a in layer.lora_A:
                target += strength * layer.get_delta_weight(a).float() * lam  # on smoothed inputs
        merge_act_clip(base, layer.act_clip([a for a in strengths if a in layer.lora_A]))
        residual = F.quantize_weight(target, s.weights, s.group_size, SHRINK_GRID)
        base.qweight.copy_(pack_codes(residual.codes, s.weights))
        base.wscales.copy_(residual.scales)
        if residual.tensor_scale is not None:
            base.wtensor_scale.copy_(residual.tensor_scale)
        model.set_submodule(name, base)
    return model


def lora_prefix(model: nn.Module) -> str:
    """The component name diffusers' LoRA loaders key on ("unet" or "transformer")."""
    return "unet" if type(model).__name__.startswith("UNet") else "transformer"


@torch.no_grad()
def save_lora(model: nn.Module, out: Path, strengths: dict[str, float], dtype: torch.dtype, kohya: bool,
              info: dict) -> Path:
    """One LoRA (several adapters concatenated along the rank, strengths and scaling folded into B)
    on the 16-bit model's layers of the same names; A acts on the unsmoothed input, as LoRA does."""
    prefix, tensors = lora_prefix(model), {}
    for name, layer in all_lora_layers(model).items():
        adapters = [a for a in strengths if a in layer.lora_A]
        a = torch.cat([layer.lora_A[x].weight for x in adapters])
        b = torch.cat([layer.lora_B[x].weight * layer.scaling[x] * strengths[x] for x in adapters], dim=1)
        base = layer.get_base_layer()
        if isinstance(base, SVDQuantLinear) and base.spec.kernel_size is not None:
            # conv: A is a k x k convolution, B a 1 x 1 one
            a, b = base.as_conv_weight(a), b[:, :, None, None]
        if kohya:
            key = f"lora_{prefix}_{name.replace('.', '_')}"
            tensors |= {f"{key}.lora_down.weight": a.to(dtype), f"{key}.lora_up.weight": b.to(dtype),
                        f"{key}.alpha": torch.tensor(float(a.shape[0]), dtype=dtype)}  # alpha = rank: scale 1
        else:
            tensors |= {f"{prefix}.{name}.lora_A.weight": a.to(dtype), f"{prefix}.{name}.lora_B.weight": b.to(dtype)}
    if not tensors:
        raise UserError("the run's model has no adapter layers to export")
    atomic_save_file(tensors, out / LORA_WEIGHTS,
                     {"format": "pt", "svdtune": json.dumps(info)})
    return out


def save_nunchaku_keys(model: nn.Module, out: Path, dtype: torch.dtype) -> Path:
    tensors = {}
    for name, m in model.named_modules():
        if isinstance(m, SVDQuantLinear):
            if m.act_clip is not None:
                raise UserError(f"layer {name} has a learned activation clip (lora.act_clip), which the SVDQuant "
                                "inference engine's kernels do not apply: export svdq-merged")
            tensors |= {f"{name}.{NUNCHAKU_NAMES[k]}": v for k, v in pack_layer(m, dtype).items()}
    atomic_save_file(tensors, out / "nunchaku_keys.safetensors", {"format": "svdtune-svdq, nunchaku key names"})
    atomic_write_text(out / "nunchaku_keys.json", json.dumps(NUNCHAKU_NAMES, indent=1))
    return out
