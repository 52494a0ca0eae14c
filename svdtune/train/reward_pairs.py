"""`svdtune reward-pairs`: rewrites ranked by what the domain model makes of them (Promptist's
second stage, as rejection sampling).

    svdtune reward-pairs --config configs/rewriter/pastel-rewards.yaml
    svdtune train-rewriter --config configs/rewriter/world-rewards.yaml   # fine-tune on the result

Supervised pairs teach a rewriter the domain's style, but where the user's prompt leaves something
open (an object's size, its place) it copies whatever the paired captions happened to say, and
greedy decoding settles on their most frequent choice, whether or not the image model draws it
well. So, per plain prompt of the domain: the tuned rewriter's greedy answer and a few sampled
ones are rendered by the domain's model (the 4-bit backbone with its adapter, one seed per prompt
for every candidate) and scored against what the user asked for (the plain prompt's objects, every
object right) and the domain's style; the best-scoring rewrite becomes the pair's answer (ties go
to the greedy one). The output is a `data pairs` folder; each finished candidate round is kept in
candidates/, so a killed run resumes.

The reward is the world evaluator, so the images must come from a reference-family model; real
domains would score with CLIP or ImageReward weights, which this version does not load.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import datasets
import numpy as np
from tqdm.auto import tqdm

from svdtune.config import atomic_write_text, config_text, folder_stamp, save_config
from svdtune.data import world
from svdtune.data.build import save_dataset
from svdtune.data.domains import domain_key, load_domain
from svdtune.data.pairs import PAIR_FEATURES
from svdtune.errors import UserError

log = logging.getLogger("svdtune")


@dataclasses.dataclass
class RewardPairsConfig:
    domain: str = "pastel"                 # a world style (the evaluator's reward knows only those)
    pairs: str = "data/pastel-pairs"       # a `data pairs` folder: its train split's plain prompts
    rewriter: str = "runs/rewriter/world"  # a `train-rewriter` run
    images: str = "runs/train/ref-unet-pastel"  # the domain's model: a `svdtune train` run (or any eval spec)
    prompts: int = 256                     # plain prompts (distinct, in the split's order)
    samples: int = 3                       # sampled rewrites per prompt, besides the greedy one
    temperature: float = 1.0
    steps: int = 20                        # sampling steps of the image model
    guidance: float = 4.0
    seed: int = 0
    batch_size: int = 16
    output_dir: str = "data/pastel-reward-pairs"

    def validate(self) -> None:
        for key in ("prompts", "samples", "steps", "batch_size"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if self.domain not in world.STYLES or self.domain == "plain":
            raise ValueError(f"domain: {self.domain!r} is not a world style; the reward (the world evaluator) "
                             f"scores {', '.join(s for s in world.STYLES if s != 'plain')}")


def image_rewards(scores: list[dict]) -> np.ndarray:
    """Per image: the domain's style, every asked-for object right, and the share of colour,
    shape and count right (each in [0, 1]; the sum ranks candidates)."""
    return np.array([s["style"] + s["all"] + (s["colour"] + s["shape"] + s["count"]) / 3 for s in scores])


def run_reward_pairs(cfg: RewardPairsConfig) -> Path:
    from svdtune.eval import variants
    from svdtune.eval.rewrites import image_scores
    from svdtune.generate import generate_images
    from svdtune.pipelines import load_evaluator
    from svdtune.rewrite.rewriter import DecodingConfig, Rewriter
    from svdtune.train.rewriter import load_pairs

    out, began = Path(cfg.output_dir), time.perf_counter()
    rounds = out / "candidates"  # one file per finished candidate round: a killed run resumes from them
    if (out / "config.yaml").is_file() and (out / "config.yaml").read_text() != config_text(cfg):
        shutil.rmtree(rounds, ignore_errors=True)  # another config: its rounds are not this one's
    save_config(cfg, out)
    rounds.mkdir(exist_ok=True)
    domain = load_domain(cfg.domain)
    source = load_pairs([cfg.pairs], "train")
    key = domain_key(cfg.domain)
    plains = list(dict.fromkeys(p for p, d in zip(source["plain"], source["domain"]) if d == key))[:cfg.prompts]
    if not plains:
        raise UserError(f"{cfg.pairs}: no train pair of domain {cfg.domain!r}")
    # A round is reused only for the same prompts and the same rewriter, image model and pairs on disk
    # (one of them retrained in place would otherwise keep its old candidates).
    made_with = {"plains": plains, **{k: folder_stamp(getattr(cfg, k)) for k in ("rewriter", "images", "pairs")}}
    models = {}

    def candidate_round(k: int) -> dict:
        """Round 0 is the greedy answer (it wins ties), round k > 0 a sample with its own seed."""
        path = rounds / f"round-{k}.json"
        if path.is_file():
            kept = json.loads(path.read_text())
            if kept.get("made_with") == made_with:
                return kept
        if not models:
            models.update(rewriter=Rewriter.load(cfg.rewriter), evaluator=load_evaluator(),
                          pipe=variants.load(variants.classify("images", cfg.images)))
        tuned = models["rewriter"]
        decoding = DecodingConfig(strategy="sample", temperature=cfg.temperature, seed=cfg.seed + k) if k else None
        rewrites = [r.text for r in Rewriter(tuned.model, tuned.tokenizer, decoding or tuned.decoding).rewrite(plains, domain)]
        images, _ = generate_images(models["pipe"], rewrites, cfg.steps, cfg.guidance, cfg.seed, cfg.batch_size)
        result = {"rewrites": rewrites, "made_with": made_with,
                  "rewards": image_rewards(image_scores(models["evaluator"], images, plains, cfg.domain)).tolist()}
        atomic_write_text(path, json.dumps(result))
        return result

    done = [candidate_round(k) for k in tqdm(range(1 + cfg.samples), desc="candidate rounds (rewrite, render, score)")]
    candidates, rewards = [r["rewrites"] for r in done], [r["rewards"] for r in done]
    rewards = np.stack(rewards)              # (candidates, prompts)
    best = rewards.argmax(0)                 # argmax takes the first of equals: greedy on ties
    rows = [dict(id=f"reward-{i}", source="reward", domain=key, plain=p, styled=candidates[best[i]][i],
                 similarity=float(rewards[best[i], i])) for i, p in enumerate(plains)]
    empty = datasets.Dataset.from_dict({k: [] for k in PAIR_FEATURES}, features=PAIR_FEATURES)
    save_dataset(datasets.DatasetDict(train=datasets.Dataset.from_list(rows, features=PAIR_FEATURES), val=empty),
                 out / "dataset")
    summary = {"domain": cfg.domain, "prompts": len(plains), "candidates": len(candidates),
               "mean_reward_greedy": float(rewards[0].mean()), "mean_reward_best": float(rewards.max(0).mean()),
               "best_is_greedy": float((best == 0).mean()), "seconds": round(time.perf_counter() - began, 1),
               "ranked": [{"plain": p, "rewrites": [c[i] for c in candidates], "rewards": rewards[:, i].tolist()}
                          for i, p in enumerate(plains)]}
    atomic_write_text(out / "report.json", json.dumps(summary, indent=1) + "\n")
    log.info("reward pairs for %s: mean reward %.3f greedy -> %.3f best of %d", cfg.domain,
             summary["mean_reward_greedy"], summary["mean_reward_best"], len(candidates))
    return out
