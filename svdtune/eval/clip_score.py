"""CLIP score from a local transformers CLIPModel folder: 100 * max(cos(image, text), 0) per image,
torchmetrics' definition. torchmetrics' CLIPScore itself crashes with this transformers, so the
embeddings come from CLIPModel directly; images are resized and normalised here (the image
processor's config when the folder has one, else CLIP's), with no torchvision."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from svdtune.errors import UserError
from svdtune.eval.metrics import as_tensor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipScorer:
    def __init__(self, path: str | Path, device: str = "cpu"):
        from transformers import AutoTokenizer, CLIPModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise UserError(f"clip_model: {str(path)!r} is not a transformers CLIPModel folder (no config.json in it)")
        self.model = CLIPModel.from_pretrained(str(path)).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.device = device
        pre = path / "preprocessor_config.json"
        conf = json.loads(pre.read_text()) if pre.is_file() else {}
        self.side = self.model.config.vision_config.image_size
        self.mean = torch.tensor(conf.get("image_mean", CLIP_MEAN)).view(1, 3, 1, 1)
        self.std = torch.tensor(conf.get("image_std", CLIP_STD)).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, images, prompts: list[str], batch_size: int = 32) -> torch.Tensor:
        x = as_tensor(images).float()
        scores = []
        for i in range(0, len(x), batch_size):
            pixels = F.interpolate(x[i:i + batch_size], size=(self.side, self.side), mode="bicubic",
                                   antialias=True, align_corners=False).clamp(0, 1)
            pixels = ((pixels - self.mean) / self.std).to(self.device)
            text = self.tokenizer(prompts[i:i + batch_size], padding=True, truncation=True,
                                  max_length=self.model.config.text_config.max_position_embeddings,
                                  return_tensors="pt").to(self.device)
            img = _embedding(self.model.get_image_features(pixel_values=pixels))
            txt = _embedding(self.model.get_text_features(**text))
            scores.append(100 * F.cosine_similarity(img, txt, dim=-1).clamp_min(0).cpu())
        return torch.cat(scores)


def _embedding(out) -> torch.Tensor:
    """transformers 5 may return a model output instead of a tensor: take its pooled embedding."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output
