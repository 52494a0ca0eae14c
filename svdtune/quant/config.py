"""`QuantConfig`: one dataclass for SVDQuant and its baselines; YAML and JSON round-trip.

    method       svdquant     smoothing + 16-bit rank-r branch + 4-bit residual (the default)
                 smoothquant  smoothing only (rank 0)
                 rtn          naive round-to-nearest W4A4: no smoothing, no branch
                 w8a8         INT8 weights per output channel, INT8 activations per token
                 nf4          bitsandbytes NormalFloat4 weights, 16-bit activations (W4A16)

Fields left as None take the method's default (`resolved()`); a saved manifest always holds the
resolved values, so a checkpoint says exactly how it was made.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Literal

from svdtune.config import from_dict

VERSION = 1
Method = Literal["svdquant", "smoothquant", "rtn", "w8a8", "nf4"]
WeightFormat = Literal["int4", "nvfp4", "int8", "nf4"]
ActFormat = Literal["int4", "nvfp4", "int8", "none"]

# Per-method defaults for every field that is None in a user's config.
# The baselines round to nearest over the full range (bitsandbytes' NF4 is absmax-scaled too);
# SVDQuant and SmoothQuant search a per-group range shrink.
SHRINK_GRID = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7]
# LoftQ alternations stop early once the output error stops falling; up to 12 instead of 3 gain
# 0.2 dB of median layer SQNR on SmolLM2 (benchmarks/quant_llm_layers.py: 20.08 -> 20.28 dB).
METHOD_DEFAULTS = {
    "svdquant": dict(weights="int4", activations="int4", rank=32, smooth=True, lowrank_iters=12, shrink_grid=SHRINK_GRID),
    "smoothquant": dict(weights="int4", activations="int4", rank=0, smooth=True, lowrank_iters=1, shrink_grid=SHRINK_GRID),
    "rtn": dict(weights="int4", activations="int4", rank=0, smooth=False, lowrank_iters=1, shrink_grid=[1.0]),
    "w8a8": dict(weights="int8", activations="int8", rank=0, smooth=False, lowrank_iters=1, shrink_grid=[1.0]),
    "nf4": dict(weights="nf4", activations="none", rank=0, smooth=False, lowrank_iters=1, shrink_grid=[1.0]),
}
# Group sizes along the input channels: 0 means one group per row (per channel / per token).
FORMAT_GROUP = {"int4": 64, "nvfp4": 16, "int8": 0, "nf4": 64, "none": 0}

# Modules kept in 16-bit whatever the architecture (nunchaku / deepcompressor keep the same set):
# embeddings and time/condition projections, norms and AdaLN modulation, the model's own
# proj_in/proj_out and the UNet transformers' proj_in/proj_out, shortcuts and resamplers.
KEEP_16BIT = (
    r"(^|\.)(time_embedding|time_embed|time_proj|time_text_embed|add_embedding|add_time_proj|"
    r"timestep_embedder|time_emb_proj|adaln_single|emb)(\.|$)",
    r"(^|\.)(context_embedder|x_embedder|pos_embed|patch_embed|caption_projection|caption_proj)(\.|$)",
    r"(^|\.)norm\w*(\.|$)",
    r"(^|\.)(conv_in|conv_out|conv_shortcut|downsamplers|upsamplers)(\.|$)",
    r"(^|attentions\.\d+\.)proj_(in|out)$",
)

# AdaLN modulation linears of FLUX / SD3 / SANA blocks and of their output norms.
ADALN_W4A16 = (r"(^|\.)norm\w*\.linear$",)


@dataclasses.dataclass
class CalibrationConfig:
    prompts: int = 64              # captions to run the 16-bit pipeline on
    prompt_file: str | None = None  # one caption per line; None: the world's captions (reference models)
    steps: int = 20                # denoising steps per prompt (every step is observed)
    guidance: float = 4.5          # CFG scale; both branches are observed
    batch_size: int = 16
    sample_tokens: int = 256       # input rows kept per layer for the error objective (reservoir)
    seed: int = 0

    def validate(self) -> None:
        for key in ("prompts", "steps", "batch_size", "sample_tokens"):
            if getattr(self, key) <= 0:
                raise ValueError(f"calibration.{key} must be positive, got {getattr(self, key)}")


@dataclasses.dataclass
class QuantConfig:
    version: int = VERSION
    method: Method = "svdquant"
    weights: WeightFormat | None = None
    activations: ActFormat | None = None
    group_size: int | None = None        # None: 64 for int4/nf4, 16 for nvfp4, per-channel for int8
    rank: int | None = None              # low-rank branch rank r
    smooth: bool | None = None
    smooth_alphas: list[float] = dataclasses.field(
        default_factory=lambda: [round(0.05 * i, 2) for i in range(1, 20)])  # alpha grid (plus "no smoothing")
    lowrank_iters: int | None = None     # LoftQ-style alternations (early stop on output error)
    shrink_grid: list[float] | None = None  # weight range shrink candidates, chosen per group
    gptq: bool = False                   # round the residual with GPTQ (int weights) instead of to nearest
    unsigned_acts: bool = True           # shifted uint4 for non-negative-ish (post-GELU/SiLU) int4 inputs
    include: list[str] = dataclasses.field(default_factory=lambda: [r".*"])
    exclude: list[str] = dataclasses.field(default_factory=lambda: list(KEEP_16BIT))
    # Layers (excluded ones included) quantized to 4-bit weights with 16-bit activations, no
    # smoothing and no branch: nunchaku stores FLUX's AdaLN modulation this way (W4A16), a
    # quarter of FLUX's weights that see one row per image (ADALN_W4A16).
    weight_only: list[str] = dataclasses.field(default_factory=list)
    conv3x3: bool = False                # also quantize k x k convolutions (implicit im2col view)
    calibration: CalibrationConfig = dataclasses.field(default_factory=CalibrationConfig)

    def validate(self) -> None:
        if self.version != VERSION:
            raise ValueError(f"version {self.version} is not supported; this svdtune reads version {VERSION}")
        for pattern in (*self.include, *self.exclude, *self.weight_only):
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"include/exclude/weight_only pattern {pattern!r} is not a valid regex ({e})") from None
        r = self.resolved()
        if r.rank < 0 or r.lowrank_iters < 1:
            raise ValueError(f"rank must be >= 0 and lowrank_iters >= 1, got {r.rank} and {r.lowrank_iters}")
        if r.group_size < 0 or (r.group_size and r.group_size % 2):
            raise ValueError(f"group_size must be 0 (per channel) or a positive even number, got {r.group_size}")
        if r.weights == "nvfp4" and r.group_size != 16 or r.activations == "nvfp4" and r.weights != "nvfp4":
            raise ValueError("nvfp4 uses groups of 16 for weights and activations (weights: nvfp4, group_size: 16)")
        if r.method in ("smoothquant", "rtn", "w8a8", "nf4") and r.rank:
            raise ValueError(f"method {r.method!r} has no low-rank branch; use method: svdquant for rank > 0")
        if not r.shrink_grid or not all(0 < s <= 1 for s in r.shrink_grid) or not self.smooth_alphas:
            raise ValueError("shrink_grid needs values in (0, 1] and smooth_alphas must not be empty")

    def resolved(self) -> "QuantConfig":
        """A copy with every None field set to the method's default."""
        defaults = METHOD_DEFAULTS[self.method]
        values = {k: list(v) if isinstance(v, list) else v for k, v in defaults.items() if getattr(self, k) is None}
        out = dataclasses.replace(self, **values)
        if out.group_size is None:
            out.group_size = FORMAT_GROUP[out.weights]
        return out

    def layer_config(self, name: str) -> "QuantConfig | None":
        """The config layer `name` is quantized with (`self` must be resolved), None if it stays
        16-bit: W4A4 for include minus exclude, weights only for the `weight_only` patterns."""
        if any(re.search(p, name) for p in self.include) and not any(re.search(p, name) for p in self.exclude):
            return self
        if any(re.search(p, name) for p in self.weight_only):
            return dataclasses.replace(self, activations="none", rank=0, smooth=False, lowrank_iters=1)
        return None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = "quant config") -> "QuantConfig":
        return from_dict(cls, json.loads(text), where)
