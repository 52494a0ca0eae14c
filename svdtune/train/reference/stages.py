"""Training stages of the reference family: evaluator, VAE, latent cache, UNet (+ text encoder), DiT.

Each stage is a plain loop over `fit`, which checkpoints every `save_every` steps and resumes from
the last checkpoint. The batch of step s is drawn from a generator seeded by (seed, s), so a
resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from safetensors import safe_open
from tqdm.auto import tqdm

from svdtune.config import atomic_save_file
from svdtune.data import world
from svdtune.eval import world_evaluator as ev
from svdtune.train.checkpoint import load_training_state, save_training_state
from svdtune.train.objectives import foreground
from svdtune.train.reference import components as C


@dataclasses.dataclass
class StageConfig:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    save_every: int = 200
    # "bf16": the loss under CPU autocast (weights and optimizer stay fp32): the DiT's steps are
    # 1.3x faster on these 2 cores (configs/reference/family.yaml)
    autocast: Literal["no", "bf16"] = "no"

    def validate(self) -> None:
        for key, least in (("steps", 0), ("warmup", 0), ("weight_decay", 0), ("batch_size", 1), ("save_every", 1)):
            if getattr(self, key) < least:
                raise ValueError(f"{key} must be at least {least}, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


def step_rng(seed: int, step: int) -> tuple[random.Random, torch.Generator]:
    gen = torch.Generator().manual_seed(seed * 7919 + step)
    return random.Random(seed * 104_729 + step), gen


def fit(name: str, modules: dict[str, torch.nn.Module], loss_fn: Callable[[int], torch.Tensor],
        cfg: StageConfig, ckpt_dir: Path, ema: EMAModel | None = None) -> None:
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, cfg.warmup, cfg.steps)
    stateful = {"optimizer": opt, "scheduler": sched} | ({"ema": ema} if ema is not None else {})
    start = load_training_state(ckpt_dir, modules, stateful)
    for m in modules.values():
        m.train()
    bar = tqdm(range(start, cfg.steps), desc=name, initial=start, total=cfg.steps, mininterval=5)
    running = None
    for step in bar:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.autocast == "bf16"):
            loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if ema is not None:
            ema.step(params)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.set_postfix(loss=f"{running:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}", refresh=False)
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            save_training_state(ckpt_dir, step + 1, modules, stateful)
    for m in modules.values():
        m.eval()


# ---------------------------------------------------------------- evaluator

def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Noise, blur and colour jitter, so the evaluator also reads imperfect generated images."""
    n = len(images)
    u = torch.rand(n, 4, generator=gen)
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mix = (u[:, 0] * (u[:, 1] < 0.4)).view(n, 1, 1, 1)
    images = images * (1 - mix) + blurred * mix
    images = images * (1 + 0.1 * (u[:, 2:3, None, None] - 0.5))
    sigma = (0.06 * u[:, 3] * (u[:, 1] > 0.5)).view(n, 1, 1, 1)
    images = images + sigma * torch.randn(images.shape, generator=gen)
    return images.clamp(0, 1)


def random_scenes(rng: random.Random, n: int, styles=tuple(world.STYLES), held_out: str = "any") -> list:
    return [world.sample_scene(rng, style=rng.choice(styles), held_out=held_out) for _ in range(n)]


def train_evaluator(cfg: StageConfig, seed: int, ckpt_dir: Path) -> ev.WorldEvaluator:
    torch.manual_seed(seed)
    model = ev.WorldEvaluator()

    def loss_fn(step):
        rng, gen = step_rng(seed, step)
        scenes = random_scenes(rng, cfg.batch_size)
        images = augment(torch.from_numpy(world.render_batch(scenes)), gen)
        return ev.loss(model(images), ev.targets(scenes))

    fit("evaluator", {"evaluator": model}, loss_fn, cfg, ckpt_dir)
    return model


# ---------------------------------------------------------------- VAE

def foreground_weight(x: torch.Tensor, boost: float = 9.0, grid: int | None = None) -> torch.Tensor:
    """1 on the background, up to 1 + boost on objects: objects are ~10 % of the pixels, and an
    unweighted loss spends the budget on flat background while colours stay washed out. `grid`:
    at that latent size (a latent weighs as its heaviest pixel)."""
    return 1 + boost * foreground(x, grid)


def train_vae(cfg: StageConfig, seed: int, ckpt_dir: Path, kl_weight: float = 1e-6):
    torch.manual_seed(seed)
    vae = C.build_vae()

    def loss_fn(step):
        rng, _ = step_rng(seed, step)
        x = torch.from_numpy(world.render_batch(random_scenes(rng, cfg.batch_size))) * 2 - 1
        posterior = vae.encode(x).latent_dist
        # Decode the posterior mean: sampling (std ~1 at init) drowns the code in noise and the
        # VAE learns colours far too slowly on this budget. The tiny KL only keeps latents bounded.
        err = vae.decode(posterior.mode()).sample - x
        # x is in [-1, 1], not the [0, 1] `foreground` documents: differences count twice, so the
        # weight saturates at half its threshold. The shipped VAE was trained so; kept for reproducibility.
        weight = foreground_weight(x)
        return (err.abs() * weight).mean() + (err.square() * weight).mean() + kl_weight * posterior.kl().mean()

    fit("vae", {"vae": vae}, loss_fn, cfg, ckpt_dir)
    return vae


@torch.no_grad()
def cache_latents(vae, n_scenes: int, seed: int, path: Path, batch_size: int = 256) -> dict:
    """Encode `n_scenes` plain training scenes (held-out pairs excluded) once; store the latent means.
    A cache made for another seed, scene count or VAE is made again (its latents would not match
    the captions drawn from this seed)."""
    made_with = {"seed": str(seed), "n_scenes": str(n_scenes), "vae": _fingerprint(vae)}
    if path.is_file():
        with safe_open(path, "pt") as f:
            if (f.metadata() or {}) == made_with:
                return {"mean": f.get_tensor("mean")}
    mean = []
    for i in tqdm(range(0, n_scenes, batch_size), desc="cache latents", mininterval=5):
        scenes = [world.sample_scene(world.scene_rng(seed, j), style="plain")
                  for j in range(i, min(i + batch_size, n_scenes))]
        x = torch.from_numpy(world.render_batch(scenes)) * 2 - 1
        mean.append(vae.encode(x).latent_dist.mean.half())
    cache = {"mean": torch.cat(mean)}
    atomic_save_file(cache, path, metadata=made_with)
    return cache


def _fingerprint(module: torch.nn.Module) -> str:
    """A hash of a module's weights (which VAE encoded a cache)."""
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def normalize_latents(vae, cache: dict) -> dict:
    """Make the VAE's latents zero-mean, unit-std per channel by folding the statistics of the
    cached latents into its quant_conv / post_quant_conv (exact, so scaling_factor = 1, shift = 0).

    The raw channel means sit up to 3.5 std away from 0; an epsilon-prediction UNet sampled from
    pure noise then misses that offset and every image gets a colour cast. Returns the cache in
    the normalised space.
    """
    z = cache["mean"].float()
    mu, sigma = z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3))
    c = len(mu)
    enc, dec = vae.quant_conv, vae.post_quant_conv  # 1x1 convs: moments (2c) and latent (c)
    enc.weight[:c] /= sigma.view(-1, 1, 1, 1)
    enc.bias[:c] = (enc.bias[:c] - mu) / sigma
    enc.bias[c:] -= 2 * torch.log(sigma)  # log-variance of the rescaled posterior
    dec.bias += (dec.weight[:, :, 0, 0] @ mu)
    dec.weight *= sigma.view(1, -1, 1, 1)
    vae.register_to_config(scaling_factor=1.0, shift_factor=0.0)
    return {"mean": ((z - mu.view(1, -1, 1, 1)) / sigma.view(1, -1, 1, 1)).half()}


def caption_batch(seed: int, indices: list[int], rng: random.Random, p_short: float, p_drop: float) -> list[str]:
    captions = []
    for j in indices:
        scene = world.sample_scene(world.scene_rng(seed, j), style="plain")
        order = list(range(len(scene.objects)))
        rng.shuffle(order)
        scene = dataclasses.replace(scene, caption_order=tuple(order))
        u = rng.random()
        captions.append("" if u < p_drop else scene.short_caption() if u < p_drop + p_short else scene.detailed_caption())
    return captions


def latent_foreground_weight(seed: int, indices: list[int], boost: float, size: int) -> torch.Tensor:
    """`foreground_weight` of the cached scenes at latent resolution."""
    x = torch.from_numpy(world.render_batch([world.sample_scene(world.scene_rng(seed, j), style="plain")
                                              for j in indices]))
    return foreground_weight(x, boost, size)


def cached_latents(cache: dict, indices: list[int]) -> torch.Tensor:
    return cache["mean"][indices].float()  # the VAE was trained to decode its mean (see train_vae)


# ---------------------------------------------------------------- denoisers

def train_unet(cfg: StageConfig, seed: int, ckpt_dir: Path, vae, tokenizer, cache: dict,
               p_short: float = 0.25, p_drop: float = 0.1, ema_decay: float = 0.995, snr_gamma: float = 5.0):
    """UNet and text encoder trained jointly with the v-prediction loss on a zero-terminal-SNR
    schedule (see components.ddpm_scheduler), weighted by min(1, gamma / (SNR + 1)).

    Plain v-loss weighs the x0 error by SNR + 1: the nearly clean end, where only texture is
    left, outweighs the middle, where shapes form, fifty to one (measured: shapes came out as
    blobs, 60 % shape accuracy). Min-SNR's v-prediction form, min(SNR, gamma) / (SNR + 1), would
    zero the pure-noise end, where the layout has to come from the caption; capping SNR + 1
    instead keeps that end at weight 1."""
    torch.manual_seed(seed)
    text_encoder = C.build_text_encoder(tokenizer)
    unet = C.build_unet(C.latent_size(vae), text_encoder.config.hidden_size)
    ema = EMAModel(list(unet.parameters()) + list(text_encoder.parameters()), decay=ema_decay)
    loss_fn = _unet_loss(unet, text_encoder, tokenizer, cache, cfg.batch_size, seed, seed, p_short, p_drop, snr_gamma)
    fit("unet", {"unet": unet, "text_encoder": text_encoder}, loss_fn, cfg, ckpt_dir, ema)
    ema.copy_to(list(unet.parameters()) + list(text_encoder.parameters()))
    return unet, text_encoder


def refine_unet(cfg: StageConfig, seed: int, ckpt_dir: Path, unet, text_encoder, tokenizer, cache: dict,
                foreground_boost: float = 4.0, p_short: float = 0.25, p_drop: float = 0.1,
                ema_decay: float = 0.995, snr_gamma: float = 5.0):
    """Continue the UNet alone (the text encoder stays frozen, so ref-dit, trained on it, still
    fits) with the loss up-weighted on object latents.

    Objects cover about a tenth of the latents and their corners a hundredth; after the joint
    stage squares and circles came out as the same rounded blob (square read as circle 11 of 15
    times), because a mean loss spends its budget on the flat background."""
    text_encoder.requires_grad_(False)
    unet.requires_grad_(True)
    ema = EMAModel(list(unet.parameters()), decay=ema_decay)
    loss_fn = _unet_loss(unet, text_encoder, tokenizer, cache, cfg.batch_size, seed, seed + 2, p_short, p_drop,
                         snr_gamma, foreground_boost)
    fit("unet refine", {"unet": unet}, loss_fn, cfg, ckpt_dir, ema)
    ema.copy_to(list(unet.parameters()))
    return unet


def _unet_loss(unet, text_encoder, tokenizer, cache: dict, batch_size: int, scene_seed: int, stream_seed: int,
               p_short: float, p_drop: float, snr_gamma: float, foreground_boost: float = 0.0
               ) -> Callable[[int], torch.Tensor]:
    """Step -> v-prediction loss on a batch drawn from the latent cache (the UNet stages' objective).
    `scene_seed` is the seed the cache was made with; `stream_seed` seeds the stage's batches."""
    scheduler = C.ddpm_scheduler()
    n = len(cache["mean"])

    def loss_fn(step):
        rng, gen = step_rng(stream_seed, step)
        idx = torch.randint(0, n, (batch_size,), generator=gen).tolist()
        latents = cached_latents(cache, idx)  # normalised: scaling_factor 1, shift 0
        ids = tokenizer(caption_batch(scene_seed, idx, rng, p_short, p_drop),
                        padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=gen)
        pred = unet(scheduler.add_noise(latents, noise, t), t, text_encoder(ids).last_hidden_state).sample
        weight = (snr_gamma * (1 - scheduler.alphas_cumprod[t])).clamp(max=1.0)  # = min(1, gamma / (SNR + 1))
        err = (pred - scheduler.get_velocity(latents, noise, t)) ** 2
        if foreground_boost:
            err = err * latent_foreground_weight(scene_seed, idx, foreground_boost, err.shape[-1])
        return (weight * err.mean(dim=(1, 2, 3))).mean()

    return loss_fn


def train_dit(cfg: StageConfig, seed: int, ckpt_dir: Path, vae, tokenizer, text_encoder, cache: dict,
              foreground_boost: float = 4.0, p_short: float = 0.25, p_drop: float = 0.1, ema_decay: float = 0.995):
    """SD3 transformer with rectified flow; the text encoder stays frozen.

    Sigmas are drawn uniformly, not from SD3's logit-normal density, which draws sigma > 0.9 on
    1.4 % of steps: those steps decide how many objects there are and where (the DiT trained with
    logit-normal sigmas drew a stray object in most images). The loss is up-weighted on object
    latents, as in the UNet's refinement stage."""
    torch.manual_seed(seed + 1)
    text_dim, pooled_dim = text_encoder.config.hidden_size, text_encoder.config.projection_dim
    dit = C.build_dit(C.latent_size(vae), text_dim, pooled_dim)
    pipe = C.dit_pipeline(dit, vae, text_encoder.requires_grad_(False), tokenizer)
    ema = EMAModel(list(dit.parameters()), decay=ema_decay)
    n = len(cache["mean"])

    def loss_fn(step):
        rng, gen = step_rng(seed + 1, step)
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen).tolist()
        x0 = cached_latents(cache, idx)
        with torch.no_grad():
            embeds, _, pooled, _ = pipe.encode_prompt(caption_batch(seed, idx, rng, p_short, p_drop), None, None,
                                                      **C.DIT_PIPELINE_KWARGS,
                                                      do_classifier_free_guidance=False)
        noise = torch.randn(x0.shape, generator=gen)
        sigma = torch.rand(cfg.batch_size, generator=gen).view(-1, 1, 1, 1)
        xt = (1 - sigma) * x0 + sigma * noise
        pred = dit(xt, embeds, pooled, sigma.flatten() * 1000).sample
        err = (pred - (noise - x0)) ** 2
        if foreground_boost:
            err = err * latent_foreground_weight(seed, idx, foreground_boost, err.shape[-1])
        return err.mean()

    fit("dit", {"dit": dit}, loss_fn, cfg, ckpt_dir, ema)
    ema.copy_to(list(dit.parameters()))
    return dit


def save_module(module: torch.nn.Module, path: Path) -> None:
    atomic_save_file(module.state_dict(), path)  # a half-written final file would end every re-run
