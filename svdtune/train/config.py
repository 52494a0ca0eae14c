"""`TrainConfig`: one domain-adapter job (`svdtune train --config configs/train/<model>-<domain>.yaml`)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from svdtune.quant.config import QuantConfig
from svdtune.train.lora import DEFAULT_TARGET


@dataclasses.dataclass
class LoraSettings:
    rank: int = 16
    alpha: float | None = None                # None: = rank
    dropout: float = 0.0
    target: str = DEFAULT_TARGET              # regex over quantized layer names ("": none)
    target_16bit: str = ""                    # regex over 16-bit nn.Linear names ("": none), e.g. a DiT's
                                              # AdaLN modulation or proj_out
    init: Literal["zero", "loftq", "loftq-requant"] = "loftq"
    init_iters: int = 3                       # loftq-requant alternations
    # also learn a clip of each 4-bit activation group's range (scale = clip * absmax / qmax), as
    # EfficientDM learns its activation scales: most of what W4A4 loses is in the activations
    act_clip: bool = False
    act_clip_init: float = 1.0                # the clips' start (a static clip near 0.9 suits 4-bit
                                              # activations better than the full range)
    act_clip_lr: float = 0.0                  # 0: optim.lr


@dataclasses.dataclass
class DistillSettings:
    """EfficientDM: the 16-bit teacher's sampling trajectories, the student pulled to its predictions."""
    weight: float = 1.0                       # 0: off
    prompts: int = 256                        # trajectories (from prompt_file; else plain world captions for
    prompt_file: str = ""                     # reference models, the domain data's captions for others)
    steps: int = 20                           # sampling steps per trajectory (all are training points)
    guidance: float = 4.0
    batch_size: int = 16                      # prompts per teacher call while recording


@dataclasses.dataclass
class DomainSettings:
    """The diffusion loss on a `svdtune data build` subset."""
    weight: float = 0.0                       # 0: off
    data: str = ""                            # the data build output folder
    caption: Literal["long", "short"] = "long"
    caption_dropout: float = 0.1
    min_snr_gamma: float | None = 5.0         # None: unweighted
    # flow matching's density of sigma: SD3 pre-trains with logit-normal, which seldom draws the
    # high-noise steps that set global looks (a style's background); uniform teaches those too
    timesteps: Literal["uniform", "logit-normal"] = "uniform"
    max_images: int = 0                       # 0: all
    # loss weight 1 + boost * foreground on the latents where the image differs from its median
    # colour (objects on a plain background), as the reference models were pre-trained; 0: off
    foreground_boost: float = 0.0


@dataclasses.dataclass
class OptimSettings:
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["constant", "cosine", "linear"] = "cosine"
    warmup: int = 20
    max_grad_norm: float = 1.0


@dataclasses.dataclass
class ValidationSettings:
    every: int = 100                          # steps; 0: only at the start and the end
    at_start: bool = True                     # also before the first step (the W4A4 model + init)
    loss_every: int = 25                      # distillation loss on a fixed sample of trajectory points
    loss_samples: int = 64
    prompts: list[str] = dataclasses.field(default_factory=list)  # empty: a few domain/world prompts
    seed: int = 0
    steps: int = 20
    guidance: float = 4.0


@dataclasses.dataclass
class TrainConfig:
    model: str = "ref-unet"                   # the 16-bit pipeline (teacher, VAE, text encoders)
    quantized: str = ""                       # a `svdtune quantize` folder; "" = quantize here with `quant`
    quant: QuantConfig = dataclasses.field(default_factory=QuantConfig)
    output_dir: str = "runs/train/ref-unet-pastel"
    adapter_name: str = "default"
    seed: int = 0
    steps: int = 300
    batch_size: int = 8                       # per process and micro-step
    grad_accum: int = 1
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = False
    ema_decay: float = 0.0                    # > 0: keep an EMA of the adapter (saved as adapter-ema)
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)
    distill: DistillSettings = dataclasses.field(default_factory=DistillSettings)
    domain: DomainSettings = dataclasses.field(default_factory=DomainSettings)
    optim: OptimSettings = dataclasses.field(default_factory=OptimSettings)
    validation: ValidationSettings = dataclasses.field(default_factory=ValidationSettings)
    save_every: int = 100
    keep_last: int = 3
    resume: str = ""                          # "latest", a checkpoint folder, or "" (start fresh)
    log_with: Literal["wandb", "tensorboard", "none"] = "wandb"  # wandb is offline unless WANDB_MODE says otherwise
    log_every: int = 10
    deepspeed: str = ""                       # a DeepSpeed JSON config (configs/deepspeed/zero2.json) for multi-node
    device: str = ""                          # "" = accelerate's choice (GPU when present)
    dtype: str = "float32"                    # teacher and frozen backbone storage

    def validate(self) -> None:
        for key in ("steps", "batch_size", "grad_accum", "save_every", "keep_last", "log_every"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if self.distill.weight < 0 or self.domain.weight < 0 or self.distill.weight + self.domain.weight == 0:
            raise ValueError("distill.weight and domain.weight must be >= 0 and not both 0")
        if self.domain.weight and not self.domain.data:
            raise ValueError("domain.weight > 0 needs domain.data (a `svdtune data build` output folder)")
        if not 0 <= self.domain.caption_dropout < 1:
            raise ValueError(f"domain.caption_dropout must be in [0, 1), got {self.domain.caption_dropout}")
        if self.domain.foreground_boost < 0:
            raise ValueError(f"domain.foreground_boost must be >= 0, got {self.domain.foreground_boost}")
        if self.validation.loss_samples <= 0:
            raise ValueError(f"validation.loss_samples must be positive, got {self.validation.loss_samples}")
        if self.lora.rank <= 0:
            raise ValueError(f"lora.rank must be positive, got {self.lora.rank}")
        if not 0 < self.lora.act_clip_init <= 1 or self.lora.act_clip_lr < 0:
            raise ValueError(f"lora.act_clip_init must be in (0, 1] and lora.act_clip_lr >= 0, got "
                             f"{self.lora.act_clip_init} and {self.lora.act_clip_lr}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
