"""Domain fine-tuning data: VAE latents of a data-stage subset's images and the denoiser's
conditioning for their captions, computed once with the 16-bit pipeline and cached on disk.

The conditioning is recorded the same way as teacher trajectories (a hook on the denoiser during
a one-step, guidance-free pipeline call), so whatever a pipeline feeds its denoiser besides the
latent and the timestep (text states, pooled embeddings, SDXL time ids) is reproduced exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from svdtune.errors import UserError
from svdtune.pipelines import call_kwargs
from svdtune.quant.quantize import denoiser_of
from svdtune.train.objectives import foreground
from svdtune.train.trajectories import Recorder, TensorCache, assemble, moved, store_dtype, unflatten

CAPTIONS = ("long", "short")


class DomainData(TensorCache):
    """tensors: "latents" (N, ...), "foreground" (N, 1, h, w: `objectives.foreground` of each image,
    max-pooled to the latent grid), "const/<arg>" (N, ...), "uncond/<arg>" (1, ...), "shared/<arg>";
    meta: latent_key (the denoiser's latent argument), caption, source."""

    def __len__(self) -> int:
        return self.tensors["latents"].shape[0]

    def batch(self, index: torch.Tensor, drop: torch.Tensor, device=None, dtype=None) -> tuple[dict, torch.Tensor]:
        """(denoiser kwargs without latent and timestep, clean latents) for rows `index`; rows
        where `drop` is true get the empty caption's conditioning (caption dropout)."""
        flat: dict[str, object] = dict(self.plain)
        for name, t in self.tensors.items():
            kind, _, key = name.partition("/")
            if kind == "const":
                rows = t[index]
                empty = self.tensors[f"uncond/{key}"].expand_as(rows)
                flat[key] = torch.where(drop.view((-1,) + (1,) * (rows.ndim - 1)), empty, rows)
            elif kind == "shared":
                flat[key] = t
        flat["latents"] = self.tensors["latents"][index]
        flat = moved(flat, device, dtype)
        latents = flat.pop("latents")
        return unflatten(flat), latents

    def foreground(self, index: torch.Tensor, device=None) -> torch.Tensor:
        return self.tensors["foreground"][index].to(device, torch.float32)


@torch.no_grad()
def record_conditioning(pipe, prompts: list[str]) -> tuple[dict[str, torch.Tensor], dict, str, tuple[int, ...]]:
    """Per-prompt denoiser arguments besides latent and timestep ("const/..." and "shared/..."),
    plain arguments, the latent argument's name and its shape per sample."""
    denoiser = denoiser_of(pipe)
    with Recorder(denoiser) as rec:
        pipe(prompt=prompts, num_inference_steps=1, guidance_scale=1.0, output_type="latent", **call_kwargs(pipe))
    tensors, plain = assemble(rec.calls, 1)
    latent_key = next(iter(rec.calls[0][0]))
    if "const/timestep" not in tensors:
        raise UserError(f"{type(denoiser).__name__} takes no `timestep` argument: not a supported denoiser")
    latent_shape = tuple(tensors.pop(f"const/{latent_key}").shape[1:])
    tensors.pop("const/timestep")
    tensors.pop("output")
    return tensors, plain, latent_key, latent_shape


def load_subset(dataset_dir: str | Path, split: str = "train"):
    import datasets

    path = Path(dataset_dir)
    path = path / "dataset" if (path / "dataset").is_dir() else path
    if not path.is_dir():
        raise UserError(f"domain data {str(dataset_dir)!r} does not exist (make it with `svdtune data build`)")
    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise UserError(f"{str(path)!r} is not a `svdtune data build` output (no saved dataset in it)") from None
    if split not in ds:
        raise UserError(f"{path}: no {split!r} split (has {', '.join(ds)})")
    return ds[split]


def captions_of(rows, caption: str = "long") -> list[str]:
    """The long captions of a batch of records (the short one where a record has none), or the short ones."""
    return [lc if caption == "long" and lc else sc for lc, sc in zip(rows["long_caption"], rows["short_caption"])]


def image_tensor(images: list, size: tuple[int, int]) -> torch.Tensor:
    """PIL images -> (B, 3, H, W) in [-1, 1], resized (bicubic) to `size` = (H, W) when needed."""
    from PIL import Image

    arrays = []
    for im in images:
        if im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(im, dtype=np.float32) / 127.5 - 1)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


@torch.no_grad()
def build_domain_data(pipe, dataset_dir: str | Path, caption: str = "long", max_images: int = 0,
                      batch_size: int = 32) -> DomainData:
    from svdtune.data.images import load_image

    if caption not in CAPTIONS:
        raise UserError(f"domain caption {caption!r} is not one of {', '.join(CAPTIONS)}")
    ds = load_subset(dataset_dir)
    if max_images:
        ds = ds.select(range(min(max_images, len(ds))))
    if len(ds) == 0:
        raise UserError(f"domain data {str(dataset_dir)!r} has no training records")
    if hasattr(pipe, "_pack_latents"):
        raise UserError(f"{type(pipe).__name__} packs its latents: domain fine-tuning supports unpacked "
                        "latents (UNet, SD3, PixArt, SANA) so far; use distillation only")
    vae = pipe.vae
    scaling, shift = vae.config.scaling_factor, vae.config.get("shift_factor") or 0.0
    parts, plain, latent_key = [], None, None
    for start in tqdm(range(0, len(ds), batch_size), desc="domain latents", unit="batch", mininterval=5):
        rows = ds[start:start + batch_size]
        captions = captions_of(rows, caption)
        cond, plain, latent_key, latent_shape = record_conditioning(pipe, captions)
        size = (latent_shape[-2] * pipe.vae_scale_factor, latent_shape[-1] * pipe.vae_scale_factor)
        x = image_tensor([load_image(i) for i in rows["image"]], size).to(vae.device, vae.dtype)
        latents = (vae.encode(x).latent_dist.mean - shift) * scaling
        fg = foreground((x.float() + 1) / 2, latents.shape[-2:])
        parts.append({"latents": store_dtype(latents.cpu()), "foreground": fg.cpu().half()}
                     | {k: store_dtype(v) for k, v in cond.items()})
    uncond, _, _, _ = record_conditioning(pipe, [""])
    tensors = {k: parts[0][k] if k.startswith("shared/") else torch.cat([p[k] for p in parts]) for k in parts[0]}
    tensors |= {"uncond/" + k.partition("/")[2]: store_dtype(v) for k, v in uncond.items() if k.startswith("const/")}
    meta = {"latent_key": latent_key, "records": len(ds), "caption": caption,
            "source": str(dataset_dir)}
    return DomainData(tensors, plain, meta)

