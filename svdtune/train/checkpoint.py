"""Resumable training state: module weights (safetensors), optimizer/scheduler/EMA state, step.

A checkpoint is a directory written beside it under a temporary name and renamed into place, so
a run killed mid-save keeps its previous checkpoint. Optimizer state is loaded with
`weights_only=True` (no arbitrary unpickling).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from svdtune.config import atomic_folder


def save_training_state(directory: str | os.PathLike, step: int, modules: dict[str, torch.nn.Module],
                        stateful: dict[str, object] | None = None) -> Path:
    """Save `modules` (weights) and `stateful` objects (anything with state_dict) at `step`."""
    with atomic_folder(directory) as tmp:
        for name, module in modules.items():
            state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
            save_file(state, tmp / f"{name}.safetensors")
        for name, obj in (stateful or {}).items():
            torch.save(obj.state_dict(), tmp / f"{name}.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step}))
    return Path(directory)


def load_training_state(directory: str | os.PathLike, modules: dict[str, torch.nn.Module],
                        stateful: dict[str, object] | None = None) -> int:
    """Restore a checkpoint written by save_training_state; returns its step (0 if none). A run
    killed between save_training_state's two renames left only `<directory>.old`: that one is read."""
    directory = Path(directory)
    if not (directory / "state.json").is_file():
        directory = directory.with_name(directory.name + ".old")
    meta = directory / "state.json"
    if not meta.is_file():
        return 0
    for name, module in modules.items():
        module.load_state_dict(load_file(directory / f"{name}.safetensors"))
    for name, obj in (stateful or {}).items():
        obj.load_state_dict(torch.load(directory / f"{name}.pt", weights_only=True))
    return int(json.loads(meta.read_text())["step"])


# ---------------------------------------------------------------- adapter runs (accelerate)

CHECKPOINT_PREFIX = "step-"


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:07d}"


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Finished checkpoints under `root`, oldest first (temporary `.tmp` folders are not listed)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
             and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def prune_checkpoints(root: str | os.PathLike, keep: int) -> None:
    """Keep the newest `keep` checkpoints; drop the others and what a killed save left (`.tmp`).
    Called after a save's rename, when no save is in progress."""
    stale = [p for p in Path(root).glob(f"{CHECKPOINT_PREFIX}*.tmp") if p.is_dir()]
    for old in list_checkpoints(root)[:-keep] + stale:
        shutil.rmtree(old, ignore_errors=True)
