"""What a result was measured with: library versions, device, threads, machine."""

from __future__ import annotations

import importlib.metadata as md
import platform

import torch

PACKAGES = ("svdtune", "torch", "diffusers", "transformers", "peft", "torchmetrics", "safetensors", "numpy")


def environment(device: str = "cpu") -> dict:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    on_cuda = torch.device(device).type == "cuda" and torch.cuda.is_available()
    return {"versions": versions, "python": platform.python_version(),
            "device": torch.cuda.get_device_name(torch.device(device)) if on_cuda else "cpu",
            "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine()}
