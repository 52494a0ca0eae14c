"""CLIP score, FID and ImageReward with weights from local paths (tiny stand-ins for the real ones:
no CLIP or Inception weights exist offline), and the notes when they are absent or unusable."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from svdtune.errors import UserError
from svdtune.eval import optional_metrics
from svdtune.eval.frechet import frechet_distance
from svdtune.pipelines import REFERENCE_DIR


def tiny_clip(path):
    """A random-weight CLIPModel saved with the reference UNet's CLIP tokenizer."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    torch.manual_seed(0)
    layers = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, projection_dim=16)
    config = CLIPConfig(text_config=dict(layers, vocab_size=49408, max_position_embeddings=77),
                        vision_config=dict(layers, image_size=32, patch_size=8), projection_dim=16)
    CLIPModel(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(REFERENCE_DIR / "ref-unet" / "tokenizer").save_pretrained(path)
    return path


def test_clip_score_is_the_models_own_image_text_similarity(tmp_path):
    from transformers import CLIPModel

    from svdtune.eval.clip_score import ClipScorer

    path = tiny_clip(tmp_path / "clip")
    scorer = ClipScorer(path)
    images = np.random.default_rng(0).random((3, 48, 48, 3), dtype=np.float32)
    prompts = ["a red circle", "a blue square at the top left", "a green cross"]
    scores = scorer(images, prompts)
    # CLIPModel's forward: logits_per_image = exp(logit_scale) * cosine, on the same inputs
    model = CLIPModel.from_pretrained(path).eval()
    pixels = torch.nn.functional.interpolate(torch.from_numpy(images).permute(0, 3, 1, 2), size=(32, 32),
                                             mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    pixels = (pixels - scorer.mean) / scorer.std
    text = scorer.tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(pixel_values=pixels, **text).logits_per_image.diagonal() / model.logit_scale.exp()
    assert torch.allclose(scores, 100 * logits.clamp_min(0), atol=1e-4)
    with pytest.raises(UserError, match="not a transformers CLIPModel folder"):
        ClipScorer(tmp_path)


class PoolFeatures(nn.Module):
    """Stands in for the FID Inception: the same call signature, 8 pooled features."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 5, stride=4)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return torch.tanh(self.conv(x / 255)).mean(dim=(2, 3))


def test_fid_runs_torchmetrics_on_a_local_torchscript_network(tmp_path):
    from svdtune.eval.inception import InceptionFeatures, fid

    torch.manual_seed(0)
    path = tmp_path / "inception.pt"
    torch.jit.script(PoolFeatures()).save(str(path))
    rng = np.random.default_rng(0)
    real, fake = rng.random((64, 48, 48, 3), dtype=np.float32), rng.random((64, 48, 48, 3), dtype=np.float32) ** 2
    net = InceptionFeatures(path)
    as_nchw = [torch.from_numpy(a).permute(0, 3, 1, 2) for a in (real, fake)]
    expected = frechet_distance(net(as_nchw[1]), net(as_nchw[0]))
    assert expected > 0 and abs(fid(path, real, fake) - expected) <= 1e-4 * expected
    (tmp_path / "not.pt").write_text("no")
    with pytest.raises(UserError, match="is not a TorchScript file"):
        InceptionFeatures(tmp_path / "not.pt")


def test_absent_or_unusable_metrics_are_one_line_notes(tmp_path):
    cfg = SimpleNamespace(clip_model="", inception="", image_reward="", device="cpu")
    notes = optional_metrics.load(cfg).notes
    assert [n.split(":")[0] for n in notes] == ["CLIP score", "FID", "ImageReward"]
    assert all("\n" not in n for n in notes)
    ckpt = tmp_path / "ImageReward.pt"
    ckpt.write_bytes(b"\0")
    m = optional_metrics.load(SimpleNamespace(**(cfg.__dict__ | {"image_reward": str(ckpt)})))
    try:
        import ImageReward  # noqa: F401
    except Exception:  # as on these machines (no package, or torchvision's ops fail): an honest note
        assert m.image_reward is None and "ImageReward: not computed: the ImageReward package does not import" in m.notes[-1]
    else:  # the package imports but the checkpoint is junk
        assert m.image_reward is None and "ImageReward.load(" in m.notes[-1]
    with pytest.raises(UserError, match="image_reward: '/no/such.pt' does not exist"):
        optional_metrics.load(SimpleNamespace(**(cfg.__dict__ | {"image_reward": "/no/such.pt"})))
