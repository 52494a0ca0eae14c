import pytest
import torch

from svdtune.train.reference.stages import StageConfig, fit


@pytest.mark.parametrize("autocast, dtype", [("no", torch.float32), ("bf16", torch.bfloat16)])
def test_fit_runs_the_loss_in_the_configured_precision_and_keeps_fp32_weights(tmp_path, autocast, dtype):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    x = torch.randn(64, 8)
    y = x @ torch.randn(8, 1)
    seen = []
    model.register_forward_hook(lambda module, inputs, out: seen.append(out.dtype))

    def loss_fn(step):
        return ((model(x).float() - y) ** 2).mean()

    start = loss_fn(0).item()
    seen.clear()
    fit("toy", {"model": model}, loss_fn, StageConfig(steps=60, lr=0.1, warmup=1, save_every=60, autocast=autocast),
        tmp_path / "ckpt")
    assert set(seen) == {dtype}
    assert model.weight.dtype == torch.float32
    assert loss_fn(0).item() < 0.1 * start  # it still learns


def test_the_latent_cache_is_remade_for_another_seed_or_vae(tmp_path):
    from svdtune.train.reference import components as C
    from svdtune.train.reference.stages import cache_latents

    torch.manual_seed(0)
    vae, path = C.build_vae().eval(), tmp_path / "latents.safetensors"
    first = cache_latents(vae, 4, 0, path)["mean"]
    stamp = path.stat().st_mtime_ns
    assert torch.equal(cache_latents(vae, 4, 0, path)["mean"], first) and path.stat().st_mtime_ns == stamp  # reused
    second = cache_latents(vae, 4, 1, path)["mean"]
    assert not torch.equal(second, first)  # another seed: other scenes
    with torch.no_grad():
        vae.encoder.conv_in.weight.mul_(2)
    assert not torch.equal(cache_latents(vae, 4, 1, path)["mean"], second)  # another VAE
