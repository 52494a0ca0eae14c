"""LPIPS reproduces its reference behaviour on real photos; PSNR / SSIM are torchmetrics' per image."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from svdtune.eval.metrics import lpips, psnr, ssim

skimage_data = pytest.importorskip("skimage.data")


def photos(size=128):
    """Real photos from scikit-image, centre-cropped and resized to size x size, N x 3 x H x W."""
    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        img = torch.from_numpy(getattr(skimage_data, name)()).permute(2, 0, 1).float() / 255
        h, w = img.shape[1:]
        s = min(h, w)
        img = img[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        out.append(F.interpolate(img[None], size=(size, size), mode="area")[0])
    return torch.stack(out)


def test_lpips_zero_for_identical_and_monotone_in_noise():
    x = photos()
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    assert lpips(x, x).abs().max() < 1e-6
    levels = [0.02, 0.05, 0.1, 0.2, 0.4]
    scores = torch.stack([lpips((x + s * noise).clamp(0, 1), x) for s in levels])  # (levels, images)
    print("LPIPS by noise level:", {s: [round(v, 3) for v in row.tolist()] for s, row in zip(levels, scores)})
    assert (scores[1:] > scores[:-1]).all()  # every photo, every step
    assert 0.02 < scores[1].mean() < 0.4 and 0.3 < scores[3].mean() < 1.2  # LPIPS's usual range, not a broken net
    blurred = F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    assert (lpips(blurred, x) > scores[0]).all()  # a 5 x 5 blur is further than faint noise


def test_psnr_and_ssim_are_per_image_torchmetrics_values():
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    x = photos(64)
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    for i in range(len(x)):
        expected_psnr = PeakSignalNoiseRatio(data_range=1.0)(y[i:i + 1], x[i:i + 1])
        expected_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)(y[i:i + 1], x[i:i + 1])
        assert abs(psnr(y, x)[i] - expected_psnr) < 1e-4 and abs(ssim(y, x)[i] - expected_ssim) < 1e-5
    # numpy N x H x W x 3 input gives the same numbers
    as_numpy = y.permute(0, 2, 3, 1).numpy(), x.permute(0, 2, 3, 1).numpy()
    assert torch.allclose(psnr(*as_numpy), psnr(y, x)) and np.isfinite(ssim(*as_numpy).numpy()).all()


def test_weight_conversion_unpickles_numpy_arrays_only(tmp_path):
    import pickle

    from svdtune.errors import UserError
    from svdtune.eval.lpips import convert

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(pickle.dumps({"AlexNet_0": print}))  # any callable is code a pickle could run
    with pytest.raises(UserError, match="refusing to unpickle builtins.print"):
        convert(bad, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
