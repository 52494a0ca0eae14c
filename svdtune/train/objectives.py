"""Training objectives: distillation to the 16-bit teacher, and the denoising loss on domain data.

The denoising loss follows the pipeline's scheduler:
    DDPM family (alphas_cumprod)  x_t = sqrt(a) x0 + sqrt(1 - a) e; target e (epsilon) or
                                  v = sqrt(a) e - sqrt(1 - a) x0 (v_prediction); t in [0, T)
    flow matching                 x_t = (1 - s) x0 + s e; target e - x0; s uniform or logit-normal
                                  (SD3's pre-training), shifted like the scheduler's sigmas; the
                                  model sees s * 1000 (FLUX: s). Logit-normal seldom draws s > 0.9,
                                  the steps that set an image's global colours: the reference DiT
                                  drew the pastel style's cream background on about half the
                                  prompts with it, on 95 % with uniform.
Min-SNR weighting (Hang et al., 2023) caps each sample's weight at gamma / SNR in the loss's own
units: min(1, gamma / SNR) for epsilon, min(1, gamma / (SNR + 1)) for v (this keeps weight 1 at
a zero-terminal-SNR schedule's pure-noise end, where min(SNR, gamma) / (SNR + 1) would give 0).
Flow matching's loss is unweighted, as in diffusers' SD3 and FLUX training scripts.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from svdtune.errors import UserError


def model_output(model, kwargs: dict) -> torch.Tensor:
    out = model(**kwargs, return_dict=False)
    return out[0] if isinstance(out, tuple) else out


def distillation_loss(student, kwargs: dict, target: torch.Tensor) -> torch.Tensor:
    """EfficientDM: the student's prediction pulled to the teacher's at the same input (MSE)."""
    return F.mse_loss(model_output(student, kwargs).float(), target.float())


@dataclasses.dataclass
class NoiseSchedule:
    kind: str                                  # "ddpm" or "flow"
    prediction: str                            # "epsilon", "v_prediction" or "flow"
    num_train_timesteps: int = 1000
    alphas_cumprod: torch.Tensor | None = None
    shift: float = 1.0                         # flow: sigma -> shift s / (1 + (shift - 1) s)
    timestep_scale: float = 1000.0             # flow: what the model is given per unit of sigma
    density: str = "uniform"                   # flow: of sigma before the shift, or "logit-normal"

    @classmethod
    def from_pipeline(cls, pipe, density: str = "uniform") -> "NoiseSchedule":
        sched = pipe.scheduler
        cfg = sched.config
        if hasattr(sched, "alphas_cumprod"):
            prediction = cfg.get("prediction_type", "epsilon")
            if prediction not in ("epsilon", "v_prediction"):
                raise UserError(f"scheduler prediction_type {prediction!r} is not supported (epsilon or v_prediction)")
            return cls("ddpm", prediction, cfg.num_train_timesteps, sched.alphas_cumprod.float())
        if "FlowMatch" in type(sched).__name__:
            flux = "Flux" in type(pipe).__name__
            return cls("flow", "flow", cfg.num_train_timesteps, shift=float(cfg.get("shift", 1.0)),
                       timestep_scale=1.0 if flux else float(cfg.num_train_timesteps), density=density)
        raise UserError(f"scheduler {type(sched).__name__} is neither a DDPM-family nor a flow-matching scheduler")

    def noisy(self, x0: torch.Tensor, noise: torch.Tensor, u: torch.Tensor):
        """(x_t, model timestep, target, snr) for uniform draws `u` in [0, 1) (one per sample)."""
        shape = (-1,) + (1,) * (x0.ndim - 1)
        if self.kind == "ddpm":
            t = (u * self.num_train_timesteps).long().clamp(max=self.num_train_timesteps - 1)
            a = self.alphas_cumprod.to(x0.device)[t].view(shape)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
            target = noise if self.prediction == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
            return xt, t, target, (a / (1 - a)).flatten()
        sigma = u.clamp(1e-6, 1 - 1e-6)
        if self.density == "logit-normal":
            sigma = torch.sigmoid(torch.special.ndtri(sigma))
        sigma = self.shift * sigma / (1 + (self.shift - 1) * sigma)
        s = sigma.view(shape)
        return (1 - s) * x0 + s * noise, sigma * self.timestep_scale, noise - x0, ((1 - sigma) / sigma) ** 2

    def weights(self, snr: torch.Tensor, gamma: float | None) -> torch.Tensor:
        if not gamma or self.kind == "flow":
            return torch.ones_like(snr)
        denominator = snr if self.prediction == "epsilon" else snr + 1
        return (gamma / denominator.clamp_min(1e-12)).clamp(max=1.0)


def foreground(images: torch.Tensor, grid: int | tuple[int, int] | None = None) -> torch.Tensor:
    """(B, 1, H, W) in [0, 1]: how far each pixel of `images` (B, 3, H, W in [0, 1]) is from the
    image's median colour (its background, where that covers most of the image); max-pooled to
    `grid` (a latent size) when given, so a latent counts as object if any of its pixels does."""
    background = images.flatten(2).median(dim=2).values[:, :, None, None]
    fg = ((images - background).abs().sum(1, keepdim=True) / 0.3).clamp(0, 1)
    return fg if grid is None else F.adaptive_max_pool2d(fg, grid)


def denoising_loss(model, kwargs: dict, target: torch.Tensor, weights: torch.Tensor,
                   element_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample weighted MSE, optionally weighted per latent element too (broadcast). Models
    predicting a learned variance too (PixArt: 2C channels) are scored on their first C channels,
    as their pipelines use them."""
    pred = model_output(model, kwargs).float()
    if pred.shape[1] == 2 * target.shape[1] and pred.ndim == 4:
        pred = pred[:, :target.shape[1]]
    err = (pred - target.float()).pow(2)
    if element_weights is not None:
        err = err * element_weights
    return (weights * err.flatten(1).mean(1)).mean()
