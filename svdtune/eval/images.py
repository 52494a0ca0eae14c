"""The images of an eval: saved per variant (uint8 safetensors, one tensor per prompt set), read
back by `svdtune compare`, and shown side by side per prompt set in captioned PNG grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from svdtune.config import atomic_save_file
from svdtune.eval import prompt_sets
from svdtune.eval.grid import comparison_grid, save_image
from svdtune.generate import slug


def save_images(path: Path, images: dict[str, np.ndarray], label: str) -> Path:
    uint8 = {name: torch.from_numpy((np.clip(a, 0, 1) * 255).round().astype(np.uint8)) for name, a in images.items()}
    return atomic_save_file(uint8, path, {"format": "pt", "variant": label})


def load_images(eval_dir: Path, record: dict) -> dict[str, np.ndarray]:
    """A variant's saved images per prompt set, as N x H x W x 3 floats in [0, 1]."""
    return {k: v.numpy().astype(np.float32) / 255 for k, v in load_file(eval_dir / record["images"]).items()}


def resized(images: np.ndarray, side: int) -> torch.Tensor:
    """N x H x W x 3 -> N x 3 x side x side (bilinear, antialiased when shrinking)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    if x.shape[-1] == side and x.shape[-2] == side:
        return x
    return torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)


def write_grids(out: Path, results: dict, evals: list[tuple[str, Path, dict]], rows: int) -> list[Path]:
    """One grid per prompt set shared by all evals (same prompts and seeds): each prompt's row holds
    the reference image when the set has one (world scenes are drawn again: they are deterministic)
    and every variant of every eval, side by side. evals: (tag prefixed to labels, folder, results)."""
    paths = []
    first = evals[0][2]
    for name, info in first["prompt_sets"].items():
        if not all(e["prompt_sets"].get(name, {}).get("prompts") == info["prompts"] and
                   e["prompt_sets"][name]["seeds"] == info["seeds"] for _, _, e in evals):
            continue
        n = min(rows, len(info["prompts"]))
        columns, labels = [], []
        ref = _grid_reference(info, n)
        if ref is not None:
            columns.append(ref)
            labels.append(info["reference"])
        for tag, folder, e in evals:
            for label, record in e["variants"].items():
                columns.append(load_images(folder, record)[name][:n])
                labels.append(f"{tag}: {label}" if tag else label)
        path = out / "grids" / f"{slug(name) or 'prompts'}.png"
        paths.append(save_image(path, comparison_grid(columns, labels, info["prompts"][:n])))
    results["grids"] = [str(p.relative_to(out)) for p in paths]
    return paths


def _grid_reference(info: dict, n: int) -> np.ndarray | None:
    """The set's reference images again, for the grid: world scenes are drawn again (deterministic),
    data images read again; None when the set has none or its source no longer gives the same prompts."""
    from svdtune.errors import UserError

    if not info["reference"]:
        return None
    try:
        s = prompt_sets.parse(info["spec"], len(info["prompts"]))
    except UserError:  # e.g. a data folder moved since the eval ran
        return None
    return s.reference[:n] if s.prompts == info["prompts"] else None
