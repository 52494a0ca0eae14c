"""The metrics that need weights from the user (CLIP score, FID, ImageReward): their scorers when
the weights are given and load, else a one-line note for the report. Absence is never an error; a
path that is given but wrong is (UserError naming it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class OptionalMetrics:
    clip: Callable | None = None
    inception: str | None = None  # checked TorchScript file for FID
    image_reward: Callable | None = None
    notes: list[str] = field(default_factory=list)


def load(cfg) -> OptionalMetrics:
    """From a config with clip_model, inception, image_reward and device keys."""
    m = OptionalMetrics()
    if cfg.clip_model:
        from svdtune.eval.clip_score import ClipScorer

        m.clip = ClipScorer(cfg.clip_model, cfg.device)
    else:
        m.notes.append("CLIP score: not computed (no clip_model given; CLIP weights do not ship offline).")
    if cfg.inception:
        from svdtune.eval.inception import InceptionFeatures

        InceptionFeatures(cfg.inception)  # fail now, not after generating every image
        m.inception = str(Path(cfg.inception))
    else:
        m.notes.append("FID: not computed (no inception file given); FD-evaluator / FD-AlexNet are Fréchet "
                       "distances on other features and are not comparable with published FIDs.")
    if cfg.image_reward:
        from svdtune.eval.image_reward import Unavailable, scorer

        try:
            m.image_reward = scorer(cfg.image_reward, cfg.device)
        except Unavailable as e:
            m.notes.append(f"ImageReward: not computed: {e}.")
    else:
        m.notes.append("ImageReward: not computed (no image_reward checkpoint given).")
    return m

