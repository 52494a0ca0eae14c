"""FID with Inception-v3 weights from a local file, through torchmetrics' FrechetInceptionDistance.

torchmetrics' own Inception needs torch-fidelity (and with it torchvision, unusable here), so the
network comes from the user as the TorchScript file the StyleGAN / clean-fid FID code uses
(`inception-2015-12-05.pt`: called as net(images in [0, 255], 299 x 299, return_features=True) ->
N x 2048 pool features) and is handed to torchmetrics as a custom feature extractor.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from svdtune.errors import UserError
from svdtune.eval.metrics import as_tensor

SIDE = 299


class InceptionFeatures(nn.Module):
    """Images N x 3 x H x W in [0, 1] -> pool features, through a TorchScript FID Inception."""

    def __init__(self, path: str | Path):
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise UserError(f"inception: {str(path)!r} does not exist (expected the TorchScript "
                            "inception-2015-12-05.pt of the StyleGAN / clean-fid FID code)")
        try:
            self.net = torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as e:
            raise UserError(f"inception: {str(path)!r} is not a TorchScript file ({str(e).splitlines()[0]})") from None

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float(), size=(SIDE, SIDE), mode="bilinear", antialias=True, align_corners=False)
        return self.net(x.clamp(0, 1) * 255, return_features=True).flatten(1)


def fid(path: str | Path, real, fake, batch_size: int = 32) -> float:
    """torchmetrics FID of `fake` against `real` (N x H x W x 3 numpy or N x 3 x H x W, in [0, 1])."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=InceptionFeatures(path), normalize=True)
    for images, is_real in ((real, True), (fake, False)):
        x = as_tensor(images).float()
        for i in range(0, len(x), batch_size):
            metric.update(x[i:i + batch_size], real=is_real)
    return float(metric.compute())
