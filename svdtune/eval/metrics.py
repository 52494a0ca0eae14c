"""Image-pair metrics: PSNR and SSIM (torchmetrics), LPIPS (svdtune.eval.lpips). Images are
N x H x W x 3 numpy arrays or N x 3 x H x W tensors with values in [0, 1]; results are per image."""

from __future__ import annotations

import functools

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def as_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return images.double() if images.dtype == torch.float64 else images.float()


def psnr(images, reference) -> torch.Tensor:
    a, b = as_tensor(images), as_tensor(reference)
    return peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(images, reference) -> torch.Tensor:
    return structural_similarity_index_measure(as_tensor(images), as_tensor(reference), data_range=1.0,
                                               reduction="none")


@functools.cache
def _lpips():
    from svdtune.eval.lpips import LPIPS

    return LPIPS()


@torch.no_grad()
def lpips(images, reference, batch_size: int = 32) -> torch.Tensor:
    a, b = as_tensor(images), as_tensor(reference)
    net = _lpips()
    return torch.cat([net(a[i:i + batch_size], b[i:i + batch_size]) for i in range(0, len(a), batch_size)])
