"""The learned evaluator of the reference world: per-cell shape / colour / size, and the style.

A small CNN reads a 48x48 image and predicts, for each of the 3x3 cells, whether it holds an
object and which shape, colour and size, plus the image's style. From that it scores prompt
alignment GenEval-style (every asked-for object present with the asked-for attributes at the
asked-for place, and nothing extra) and gives pooled features for a Frechet distance on this world.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from svdtune.data import world

EMPTY = 0  # shape class 0 means "no object in this cell"


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.SiLU())


class WorldEvaluator(nn.Module, PyTorchModelHubMixin):
    def __init__(self, width: int = 32):
        super().__init__()
        self.width = width
        self.body = nn.Sequential(
            _conv(3, width), nn.MaxPool2d(2),                              # 24x24
            _conv(width, 2 * width), _conv(2 * width, 2 * width), nn.MaxPool2d(2),  # 12x12
            _conv(2 * width, 4 * width), _conv(4 * width, 4 * width), nn.MaxPool2d(2),  # 6x6
            _conv(4 * width, 4 * width),
        )
        n_cell = 1 + len(world.SHAPES) + len(world.COLOURS) + len(world.SIZES)
        self.cell_head = nn.Sequential(nn.Conv2d(4 * width, 4 * width, 2, stride=2), nn.SiLU(),
                                       nn.Conv2d(4 * width, n_cell, 1))  # 3x3 cells
        self.style_head = nn.Linear(4 * width, len(world.STYLES))

    @property
    def feature_dim(self) -> int:
        return 4 * self.width

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: Bx3xHxW in [0, 1] (resized to 48x48 if needed)."""
        if images.shape[-1] != world.IMAGE_SIZE or images.shape[-2] != world.IMAGE_SIZE:
            images = F.interpolate(images, size=(world.IMAGE_SIZE, world.IMAGE_SIZE), mode="bilinear",
                                   antialias=True, align_corners=False)
        h = self.body(images * 2 - 1)
        features = h.mean(dim=(2, 3))
        cells = self.cell_head(h).flatten(2).transpose(1, 2)  # B x 9 x n_cell
        s, c = 1 + len(world.SHAPES), len(world.COLOURS)
        return {
            "shape": cells[..., :s], "colour": cells[..., s:s + c], "size": cells[..., s + c:],
            "style": self.style_head(features), "features": features,
        }


@dataclass
class Prediction:
    """What the evaluator sees in one image."""
    objects: list[dict]  # {"shape", "colour", "size", "position"} for each occupied cell
    style: str

    def at(self, position: str) -> dict | None:
        return next((o for o in self.objects if o["position"] == position), None)


@torch.no_grad()
def predict(evaluator: WorldEvaluator, images: torch.Tensor, batch_size: int = 256) -> list[Prediction]:
    evaluator.eval()
    preds = []
    colours, styles = list(world.COLOURS), list(world.STYLES)
    for i in range(0, len(images), batch_size):
        out = evaluator(images[i:i + batch_size].float())
        shape, colour = out["shape"].argmax(-1), out["colour"].argmax(-1)
        size, style = out["size"].argmax(-1), out["style"].argmax(-1)
        for b in range(len(shape)):
            objects = [
                {"shape": world.SHAPES[int(shape[b, k]) - 1], "colour": colours[int(colour[b, k])],
                 "size": world.SIZES[int(size[b, k])], "position": world.POSITION_NAMES[k]}
                for k in range(world.GRID * world.GRID) if int(shape[b, k]) != EMPTY
            ]
            preds.append(Prediction(objects, styles[int(style[b])]))
    return preds


ATTRIBUTES = ("shape", "colour", "size", "position")


def score(pred: Prediction, expected: list[dict], style: str | None = None) -> dict[str, float]:
    """Alignment of one image with the objects a prompt asked for (world.parse_prompt format).

    Per attribute: the fraction of asked-for objects that have it right (attributes the prompt
    leaves out count as right). An object is judged at its cell when the prompt gives one and that
    cell holds an object; otherwise it is matched to the detected object that agrees with it most
    (so a right object in the wrong place counts for shape, colour and size, not for position).
    `count` is 1 when the number of detected objects equals the number asked for; `all` is 1 when
    every object is fully right and the count is right (and the style, when one is given).
    """
    per_attr = {a: [] for a in ATTRIBUTES}
    for obj in expected:
        at_cell = pred.at(obj["position"]) if "position" in obj else None
        found = at_cell or max(pred.objects, key=lambda o: sum(o[a] == obj.get(a) for a in ATTRIBUTES), default=None)
        for a in ATTRIBUTES:
            if a == "position":
                ok = found is not None and ("position" not in obj or at_cell is not None)
            else:
                ok = found is not None and (a not in obj or found[a] == obj[a])
            per_attr[a].append(float(ok))
    result = {a: sum(v) / max(len(v), 1) for a, v in per_attr.items()}
    result["count"] = float(len(pred.objects) == len(expected))
    fully = all(min(per_attr[a][i] for a in ATTRIBUTES) == 1.0 for i in range(len(expected)))
    result["all"] = float(fully and result["count"] == 1.0)
    if style is not None:
        result["style"] = float(pred.style == style)
        result["all"] = float(result["all"] == 1.0 and result["style"] == 1.0)
    return result


def targets(scenes: list[world.Scene]) -> dict[str, torch.Tensor]:
    """Training targets for rendered scenes: per-cell class indices (-100 = not applicable)."""
    n, cells = len(scenes), world.GRID * world.GRID
    shape = torch.zeros(n, cells, dtype=torch.long)
    colour = torch.full((n, cells), -100, dtype=torch.long)
    size = torch.full((n, cells), -100, dtype=torch.long)
    colours, styles = list(world.COLOURS), list(world.STYLES)
    for i, s in enumerate(scenes):
        for o in s.objects:
            shape[i, o.cell] = 1 + world.SHAPES.index(o.shape)
            colour[i, o.cell] = colours.index(o.colour)
            size[i, o.cell] = world.SIZES.index(o.size)
    style = torch.tensor([styles.index(s.style) for s in scenes])
    return {"shape": shape, "colour": colour, "size": size, "style": style}


def loss(out: dict[str, torch.Tensor], tgt: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(F.cross_entropy(out[k].reshape(-1, out[k].shape[-1]), tgt[k].reshape(-1), ignore_index=-100)
               for k in ("shape", "colour", "size", "style"))
