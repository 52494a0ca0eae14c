import torch
from torch import nn

from svdtune.quant.calibrate import Recording, input_rows


def test_recording_keeps_exact_max_and_a_bounded_sample():
    layer = nn.Linear(16, 8)
    batches = [torch.randn(3, 50, 16) for _ in range(6)]
    batches[4][1, 7, 5] = 40.0
    with Recording({"fc": layer}, sample_tokens=64) as rec:
        for b in batches:
            layer(b)
    stats = rec.stats()["fc"]
    everything = torch.cat([b.reshape(-1, 16) for b in batches])
    assert torch.equal(stats.absmax, everything.abs().amax(0))
    assert stats.min == everything.min().item() and stats.seen == 900
    assert stats.sample.shape == (64, 16) and stats.sample.dtype == torch.float16
    # every kept row is a real input row
    dist = torch.cdist(stats.sample.float(), everything).min(1).values
    assert dist.max() < 1e-2
    # and the sample is not just the first rows (reservoir over the whole stream)
    assert (torch.cdist(stats.sample.float(), everything[150:]).min(1).values < 1e-2).sum() > 32


def test_outliers_past_fp16_keep_the_sample_finite():
    """An fp32 layer whose inputs reach past fp16's 65504 keeps its sample in bf16: inf rows would
    make every smoothing candidate's error NaN."""
    layer = nn.Linear(16, 8)
    batches = [torch.randn(40, 16) for _ in range(3)]
    batches[1][5, 3] = 1e5
    with Recording({"fc": layer}, sample_tokens=64) as rec:
        for b in batches:
            layer(b)
    sample = rec.stats()["fc"].sample
    assert sample.dtype == torch.bfloat16 and torch.isfinite(sample).all()
    everything = torch.cat(batches)
    assert (torch.cdist(sample.float(), everything).min(1).values / everything.norm(dim=1).max() < 1e-2).all()


def test_recording_sums_every_rows_gram_for_gptq():
    conv = nn.Conv2d(3, 5, 3, padding=1)
    batches = [torch.randn(2, 3, 6, 6) for _ in range(3)]
    with Recording({"conv": conv}, sample_tokens=8, gram=True) as rec:
        for b in batches:
            conv(b)
    stats = rec.stats()["conv"]
    rows = torch.cat([input_rows(conv, b) for b in batches])  # im2col rows, not just the sample
    assert stats.seen == len(rows) and torch.allclose(stats.gram, rows.T @ rows, rtol=1e-5, atol=1e-4)
    with Recording({"conv": conv}, sample_tokens=8) as rec:
        conv(batches[0])
    assert rec.stats()["conv"].gram is None  # only on request: K x K per layer


def test_hooks_are_removed():
    layer = nn.Linear(4, 4)
    with Recording({"fc": layer}, sample_tokens=8):
        layer(torch.randn(2, 4))
    assert not layer._forward_pre_hooks


def test_conv_rows_are_im2col_patches():
    conv = nn.Conv2d(3, 5, 3, padding=1)
    x = torch.randn(2, 3, 6, 6)
    rows = input_rows(conv, x)  # (B * H * W, 9 * 3), ordered (position, channel)
    w = conv.weight.permute(0, 2, 3, 1).reshape(5, -1)
    y = (rows @ w.T + conv.bias).reshape(2, 6, 6, 5).permute(0, 3, 1, 2)
    assert torch.allclose(y, conv(x), atol=1e-5)
