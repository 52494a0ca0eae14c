"""LoRA on SVDQuant W4A4 layers, through peft's custom-module mechanism.

    config = lora_config(model, rank=16, alpha=16)        # every quantized projection by default
    attach(unet, config, "pastel")                        # diffusers' add_adapter when the model has it
    unet.set_adapter("pastel"); unet.disable_adapters()   # peft / diffusers adapter API as usual
    save_adapter(unet, "runs/pastel/adapter", "pastel");  load_adapter(unet, path, "pastel")

Each targeted `SVDQuantLinear` becomes an `SVDQuantLoraLayer`:

    y = W4A4(x) + x down^T up^T + dropout(x) A^T B^T * alpha / r'

with the 4-bit residual, smoothing and branch frozen and A, B trainable in fp32. Each adapter also
carries an activation clip per channel group (`lora_act_clip`, 1 = none), learned when training
asks for it (EfficientDM learns its activation quantizers' scales): the mean of the active
adapters' clips scales each group's 4-bit range (adapters learn clips for the same backbone, so
they are averaged, not compounded; strengths do not scale them). Merging is exact:
the adapter joins the layer's 16-bit low-rank branch (rank r + r'; both read the unsmoothed x, so A
is appended as it is), which the fused 4-bit kernels compute anyway; nunchaku fuses
LoRAs the same way. Layers kept 16-bit (a DiT's AdaLN modulation, proj_out) can be adapted too
(`target_16bit`): they get peft's own LoRA and merge into their weights.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import torch
import torch.nn.functional as Fn
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import check_adapters_to_merge
from safetensors.torch import load_file
from torch import nn

from svdtune.config import atomic_save_file
from svdtune.errors import UserError
from svdtune.quant.linear import SVDQuantLinear

ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's file names, so peft tooling reads the folder
ADAPTER_CONFIG = "adapter_config.json"
# Attention and MLP projections of UNets and DiTs (diffusers names): to_q/k/v, to_out.0,
# add_q/k/v_proj, to_add_out, ff.net.0.proj, ff.net.2, proj_mlp / proj_out of single blocks; and a
# UNet's resnet convolutions when they are quantized (quant.conv3x3): a UNet whose highest
# resolutions have no attention (SD's first level, the reference UNet's first two) can change
# fine detail and colour only there (LoCon-style LoRA).
DEFAULT_TARGET = (r"(attn\d?\.(to_(q|k|v|out\.0|add_out)|add_(q|k|v)_proj)|ff(_context)?\.net\.(0\.proj|2)|proj_mlp|proj_out"
                  r"|resnets\.\d+\.conv[12])$")


class SVDQuantLoraLayer(nn.Module, LoraLayer):
    """peft LoRA layer around an `SVDQuantLinear` (linear, or k x k convolution in its matrix view:
    A is then a k x k convolution and B a 1 x 1 one)."""

    adapter_layer_names = LoraLayer.adapter_layer_names + ("lora_act_clip",)

    def __init__(self, base_layer: SVDQuantLinear, adapter_name: str, config: LoraConfig, r: int = 0,
                 lora_alpha: int = 1, **kwargs) -> None:
        super().__init__()
        with warnings.catch_warnings():  # peft cannot read in/out features of custom layers: set below
            warnings.filterwarnings("ignore", "Unsupported layer type")
            LoraLayer.__init__(self, base_layer)
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.fan_in_fan_out = False
        self._active_adapter = adapter_name
        self._merged_ranks: list[int] = []
        self._clip_before_merge: torch.Tensor | None = None
        self.lora_act_clip = nn.ParameterDict()
        self.update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config, **kwargs)

    def update_layer(self, adapter_name: str, *args, **kwargs) -> None:
        base: SVDQuantLinear = self.get_base_layer()
        self.lora_act_clip[adapter_name] = nn.Parameter(torch.ones(base.spec.act_groups, device=base.smooth.device))
        super().update_layer(adapter_name, *args, **kwargs)

    def act_clip(self, adapters: list[str]) -> torch.Tensor | None:
        """The mean of these adapters' activation clips (None when none of them has one)."""
        clips = [self.lora_act_clip[a] for a in adapters if a in self.lora_act_clip]
        return torch.stack(clips).mean(0) if len(clips) > 1 else clips[0] if clips else None

    def resolve_lora_variant(self, *, config: LoraConfig, **kwargs):
        if config.use_dora or config.lora_bias:
            raise UserError("SVDQuant LoRA layers support plain LoRA only (use_dora and lora_bias must be false)")
        return None

    def delta(self, x: torch.Tensor, adapter: str) -> torch.Tensor:
        """The adapter's output B A dropout(x) * scaling, in the adapter's dtype."""
        base: SVDQuantLinear = self.get_base_layer()
        a, b = self.lora_A[adapter].weight, self.lora_B[adapter].weight
        x = self.lora_dropout[adapter](x.to(a.dtype))
        if base.spec.kernel_size is None:
            return Fn.linear(Fn.linear(x, a), b) * self.scaling[adapter]
        return Fn.conv2d(base._conv(x, base.as_conv_weight(a)), b[:, :, None, None]) * self.scaling[adapter]

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        self._check_forward_args(x, *args, **kwargs)
        if kwargs.pop("adapter_names", None) is not None:
            raise UserError("mixed-adapter batches (adapter_names=...) are not supported on SVDQuant layers")
        if self.disable_adapters and self.merged:
            self.unmerge()
        if self.disable_adapters or self.merged:
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, act_clip=self.act_clip(self.active_adapters), **kwargs)
        for adapter in self.active_adapters:
            if adapter in self.lora_A:
                result = result + self.delta(x, adapter).to(result.dtype)
        return result

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """B A * scaling as an (N, K) matrix on the layer's (unsmoothed) input."""
        return self.lora_B[adapter].weight @ self.lora_A[adapter].weight * self.scaling[adapter]

    def branch_factors(self, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The adapter as extra rows of the branch: (down (r', K), up (N, r')); both read x."""
        base: SVDQuantLinear = self.get_base_layer()
        down = self.lora_A[adapter].weight.float()
        up = self.lora_B[adapter].weight.float() * self.scaling[adapter]
        return down.to(base.down.dtype), up.to(base.up.dtype)

    @torch.no_grad()
    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        base: SVDQuantLinear = self.get_base_layer()
        for adapter in check_adapters_to_merge(self, adapter_names):
            if adapter not in self.lora_A:
                continue
            down, up = self.branch_factors(adapter)
            if safe_merge and not (down.isfinite().all() and up.isfinite().all()):
                raise ValueError(f"NaNs in adapter {adapter!r}: not merged")
            set_branch(base, torch.cat([base.down, down]), torch.cat([base.up, up], dim=1))
            self._merged_ranks.append(down.shape[0])
            if not self.merged_adapters:
                self._clip_before_merge = base.act_clip
            self.merged_adapters.append(adapter)
            base.set_act_clip(self._clip_before_merge)
            merge_act_clip(base, self.act_clip(self.merged_adapters))

    @torch.no_grad()
    def unmerge(self) -> None:
        base: SVDQuantLinear = self.get_base_layer()
        if self.merged_adapters:
            base.set_act_clip(self._clip_before_merge)
        while self.merged_adapters:
            self.merged_adapters.pop()
            keep = base.spec.rank - self._merged_ranks.pop()
            set_branch(base, base.down[:keep].clone(), base.up[:, :keep].clone())

    def __repr__(self) -> str:
        return "lora." + super().__repr__()


def set_branch(layer: SVDQuantLinear, down: torch.Tensor, up: torch.Tensor) -> None:
    layer.down, layer.up = down, up
    layer.spec = dataclasses.replace(layer.spec, rank=down.shape[0])


def merge_act_clip(layer: SVDQuantLinear, clip: torch.Tensor | None) -> None:
    """Multiply adapters' activation clip into the layer's (a layer gets one only when the clip is
    not all ones, so layers of adapters that learned none keep their format)."""
    if clip is not None and (clip != 1).any():
        clip = clip.detach().float()
        layer.set_act_clip(clip if layer.act_clip is None else layer.act_clip * clip)


def layer_names(model: nn.Module, target: str, kind: type = SVDQuantLinear) -> list[str]:
    """Names of the layers of exactly type `kind` (quantized by default; `nn.Linear`: the 16-bit
    ones) matching `target` (the wrapper's name once an adapter is on)."""
    names = (n.removesuffix(".base_layer") for n, m in model.named_modules() if type(m) is kind)
    return [n for n in names if re.search(target, n)]


def lora_config(model: nn.Module, rank: int = 16, alpha: float | None = None, dropout: float = 0.0,
                target: str = DEFAULT_TARGET, target_16bit: str = "") -> LoraConfig:
    """A peft LoraConfig on the model's quantized layers whose names match the regex `target`, and
    on its 16-bit linear layers matching `target_16bit`, peft's own LoRA there ("": none, for either)."""
    names = layer_names(model, target) if target else []
    if target and not names:
        raise UserError(f"no quantized layer matches the LoRA target {target!r} "
                        "(quantize the model first, or widen lora.target)")
    if target_16bit:
        extra = layer_names(model, target_16bit, nn.Linear)
        if not extra:
            raise UserError(f"no 16-bit linear layer matches lora.target_16bit {target_16bit!r}")
        names += extra
    if not names:
        raise UserError("lora.target and lora.target_16bit are both empty: the adapter has no layer")
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, lora_dropout=dropout,
                        target_modules=names, init_lora_weights=True)
    return register(config)


def register(config: LoraConfig) -> LoraConfig:
    config._register_custom_module({SVDQuantLinear: SVDQuantLoraLayer})
    return config


def attach(model: nn.Module, config: LoraConfig, adapter_name: str = "default") -> nn.Module:
    """Add an adapter: diffusers' `add_adapter` (so `set_adapter`, `disable_adapters` work), or
    peft's injection for plain modules."""
    if hasattr(model, "add_adapter"):
        model.add_adapter(config, adapter_name)
    else:
        inject_adapter_in_model(config, model, adapter_name)
    return model


def lora_layers(model: nn.Module) -> dict[str, SVDQuantLoraLayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, SVDQuantLoraLayer)}


def all_lora_layers(model: nn.Module) -> dict[str, LoraLayer]:
    """Every adapted layer: on the 4-bit backbone and on 16-bit linear layers (`lora.target_16bit`)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}


def trainable_parameters(model: nn.Module, act_clip: bool = False) -> list[nn.Parameter]:
    """Freeze everything but the adapter (its activation clips too unless `act_clip`)."""
    model.requires_grad_(False)
    params = [p for name, p in model.named_parameters()
              if "lora_" in name and (act_clip or "lora_act_clip" not in name)]
    for p in params:
        p.requires_grad_(True)
    return params


def adapter_state(model: nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    return get_peft_model_state_dict(model, adapter_name=adapter_name)


def save_adapter(model: nn.Module, directory: str | Path, adapter_name: str = "default") -> Path:
    """peft's adapter folder: adapter_model.safetensors + adapter_config.json (written atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_save_file({k: v.detach() for k, v in adapter_state(model, adapter_name).items()},
                     directory / ADAPTER_WEIGHTS, {"format": "pt"})
    model.peft_config[adapter_name].save_pretrained(str(directory))
    return directory


def load_adapter(model: nn.Module, directory: str | Path, adapter_name: str = "default") -> nn.Module:
    """Load a `save_adapter` folder into a quantized model (same architecture and quantized layers)."""
    directory = Path(directory)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (directory / name).is_file():
            raise UserError(f"{str(directory)!r} is not an adapter folder (no {name} in it)")
    config = register(LoraConfig.from_pretrained(str(directory)))
    # peft may store the targets as shortest unique name suffixes ("net.2"): match them as such
    layers = [n for n, m in model.named_modules() if isinstance(m, (SVDQuantLinear, nn.Linear, LoraLayer))]
    missing = [t for t in config.target_modules if not any(n == t or n.endswith("." + t) for n in layers)]
    if missing:
        raise UserError(f"{directory / ADAPTER_CONFIG}: target {sorted(missing)[0]!r} is not a layer of this "
                        "model (was the adapter trained on another model?)")
    attach(model, config, adapter_name)
    result = set_peft_model_state_dict(model, load_file(directory / ADAPTER_WEIGHTS), adapter_name=adapter_name)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise UserError(f"{directory / ADAPTER_WEIGHTS}: tensor {unexpected[0]!r} does not fit this model")
    return model
