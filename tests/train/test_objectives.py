"""The denoising loss: flow matching's sigma densities, the DDPM targets, the object weighting."""

import math

import pytest
import torch

from svdtune.data import world
from svdtune.train.objectives import NoiseSchedule, denoising_loss, foreground

N = 200_000


def draws(schedule: NoiseSchedule):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(N, 1, generator=g), torch.randn(N, 1, generator=g)
    return x0, noise, schedule.noisy(x0, noise, torch.rand(N, generator=g))


@pytest.mark.parametrize("density, shift, above_0_9", [
    ("uniform", 1.0, 0.1),
    # logit-normal(0, 1): P(sigma > 0.9) = P(z > logit 0.9 = 2.197) = 1.40 %
    ("logit-normal", 1.0, 0.5 * math.erfc(math.log(9) / math.sqrt(2))),
    # shift 3 maps sigma > 0.75 to > 0.9: uniform keeps 25 % there
    ("uniform", 3.0, 0.25),
])
def test_flow_sigma_density_and_targets(density, shift, above_0_9):
    schedule = NoiseSchedule("flow", "flow", shift=shift, density=density)
    x0, noise, (xt, t, target, snr) = draws(schedule)
    sigma = t / 1000
    share = (sigma > 0.9).float().mean().item()
    assert abs(share - above_0_9) < 0.005, share  # binomial std at N = 2e5 is < 0.001
    s = sigma.view(-1, 1)
    assert torch.allclose(xt, (1 - s) * x0 + s * noise, atol=1e-6)
    assert torch.equal(target, noise - x0)
    assert torch.allclose(snr, ((1 - sigma) / sigma) ** 2)


def test_ddpm_targets_and_min_snr_weights():
    alphas = torch.linspace(0.999, 0.01, 1000)
    for prediction in ("epsilon", "v_prediction"):
        schedule = NoiseSchedule("ddpm", prediction, alphas_cumprod=alphas)
        x0, noise, (xt, t, target, snr) = draws(schedule)
        a = alphas[t].view(-1, 1)
        assert torch.allclose(xt, a.sqrt() * x0 + (1 - a).sqrt() * noise, atol=1e-6)
        expected = noise if prediction == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
        assert torch.allclose(target, expected, atol=1e-6)
        w = schedule.weights(snr, gamma=5.0)
        capped = 5.0 / (snr if prediction == "epsilon" else snr + 1)
        assert torch.allclose(w, capped.clamp(max=1.0))


def test_foreground_marks_the_objects_of_a_rendered_scene():
    scene = world.Scene(objects=(world.WorldObject("square", "red", "large", 4),), style="pastel")
    image = torch.from_numpy(world.render(scene)).permute(2, 0, 1)[None]
    fg = foreground(image)[0, 0]
    c = world.IMAGE_SIZE // 2  # cell 4 is the centre; a large square's half extent is 5.8 px
    assert fg[c - 4:c + 4, c - 4:c + 4].min() == 1.0 and fg[:6, :6].max() == 0.0


def test_element_weights_scale_the_squared_error_where_they_apply():
    target = torch.zeros(2, 1, 2, 2)
    pred = torch.ones(2, 1, 2, 2)
    model = lambda **kw: (kw["x"],)  # noqa: E731
    weights = torch.tensor([[[[1.0, 1.0], [1.0, 5.0]]]]).expand(2, 1, 2, 2)
    assert denoising_loss(model, {"x": pred}, target, torch.ones(2)).item() == 1.0
    assert denoising_loss(model, {"x": pred}, target, torch.ones(2), weights).item() == 2.0  # (1+1+1+5)/4
