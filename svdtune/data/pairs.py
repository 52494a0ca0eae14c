"""`svdtune data pairs`: (plain prompt -> prompt in the domain's style) pairs for the rewriter.

    svdtune data pairs --domain food --sources coco=/data/coco,mjhq=/data/mjhq,dci=/data/sdci --out data/food-pairs
    svdtune data pairs --domain pastel --sources world=2000 --out data/pastel-pairs

The sources are filtered to the domain exactly as `data build` does, then paired:
- world and any source with long captions: short caption -> long (detailed, styled) caption;
- sDCI: short caption -> its LLM summary;
- COCO (and other short-only sources): caption -> the nearest MJHQ prompt of the domain, when
  their embedding cosine is at least `nearest_floor`.
Pairs are deduplicated, length-filtered, and split by a hash of the plain prompt (one plain
prompt never lands in both splits). Writes dataset/ (train, val), report.md, config.yaml.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Literal

import datasets
import numpy as np

from svdtune.config import atomic_write_text
from svdtune.data import filtering
from svdtune.data.build import DataBuildConfig, filter_domain, save_dataset, start
from svdtune.data.domains import domain_key
from svdtune.data.embed import Embedder
from svdtune.data.report import count_table
from svdtune.errors import UserError

log = logging.getLogger("svdtune")

PAIR_FEATURES = datasets.Features({
    "id": datasets.Value("string"), "source": datasets.Value("string"), "domain": datasets.Value("string"),
    "plain": datasets.Value("string"), "styled": datasets.Value("string"), "similarity": datasets.Value("float32"),
})


@dataclasses.dataclass
class DataPairsConfig(DataBuildConfig):
    output_dir: str = "data/pastel-pairs"
    check_images: Literal["none", "exists", "decode"] = "none"  # pairs are text only
    nearest_floor: float = 0.5   # least cosine between a COCO caption and its MJHQ prompt
    min_words: int = 3
    max_words: int = 77          # CLIP's context, in words as a rough bound

    def validate(self) -> None:
        super().validate()
        if self.per_source_cap or self.balance:
            raise ValueError("per_source_cap / balance: data pairs pairs every record of the domain; cap or "
                             "balance the training images with data build instead")


def make_pairs(subset: datasets.Dataset, domain: str, embedder: Embedder | None, floor: float) -> list[dict]:
    ids, sources, shorts, longs = (subset[c] for c in ("id", "source", "short_caption", "long_caption"))

    def pair(i: int, styled: str, similarity: float) -> dict:
        return dict(id=ids[i], source=sources[i], domain=domain, plain=shorts[i], styled=styled, similarity=similarity)

    # DCI without summaries has only short + extra caption: a description, not a prompt in a style.
    pairs = [pair(i, longs[i], 1.0) for i in range(len(ids)) if longs[i] and longs[i] != shorts[i] and sources[i] != "dci"]
    queries = [i for i in range(len(ids)) if not longs[i] and sources[i] != "mjhq"]
    targets = [shorts[i] for i in range(len(ids)) if sources[i] == "mjhq"]
    if queries and targets and embedder is not None:
        q = embedder.embed([shorts[i] for i in queries], progress="embed plain prompts")
        k = embedder.embed(targets, progress="embed MJHQ prompts")
        for first in range(0, len(q), 4096):
            sims = q[first:first + 4096] @ k.T
            for row, j in enumerate(sims.argmax(axis=1)):
                if sims[row, j] >= floor:
                    pairs.append(pair(queries[first + row], targets[j], float(sims[row, j])))
    return pairs


def clean_pairs(pairs: list[dict], min_words: int, max_words: int) -> tuple[list[dict], Counter]:
    dropped, seen, out = Counter(), set(), []
    for p in pairs:
        key = (filtering.normalise(p["plain"]), filtering.normalise(p["styled"]))
        n_plain, n_styled = len(p["plain"].split()), len(p["styled"].split())
        if key in seen:
            dropped["duplicate pair"] += 1
        elif not (min_words <= n_plain and n_styled <= max_words):
            dropped[f"length outside {min_words}..{max_words} words"] += 1
        elif n_styled <= n_plain:
            dropped["styled prompt not longer than the plain one"] += 1
        else:
            seen.add(key)
            out.append(p)
    return out, dropped


def run_data_pairs(cfg: DataPairsConfig) -> Path:
    out = Path(cfg.output_dir)
    t0 = time.perf_counter()
    domain, ds, counts, embedder = start(cfg)
    # Pairs need every kept record (validate refuses caps), no split yet (pairs are split by plain prompt).
    subset = filter_domain(ds, domain, dataclasses.replace(cfg, val_fraction=0.0), counts, embedder)["train"]
    made = make_pairs(subset, domain_key(cfg.domain), embedder, cfg.nearest_floor)
    pairs, dropped = clean_pairs(made, cfg.min_words, cfg.max_words)
    if not pairs:
        raise UserError(f"no rewrite pairs for domain {domain.name!r} from {cfg.sources}: the sources need long "
                        "captions (world, sDCI) or MJHQ prompts of the domain for short captions to pair with")
    table = datasets.Dataset.from_list(pairs, features=PAIR_FEATURES)
    is_val = filtering.id_hash(table["plain"]) < cfg.val_fraction
    split = datasets.DatasetDict(train=table.select(np.flatnonzero(~is_val)), val=table.select(np.flatnonzero(is_val)))
    save_dataset(split, out / "dataset")
    per_source = Counter(table["source"])
    summary = {"domain": domain.name, "train": len(split["train"]), "val": len(split["val"]),
               "pairs_per_source": dict(per_source), "dropped_pairs": dict(dropped),
               "records": {k: dict(v) for k, v in counts.items()}, "seconds": round(time.perf_counter() - t0, 2)}
    atomic_write_text(out / "report.json", json.dumps(summary, indent=1) + "\n")
    samples = split["train"].select(range(min(cfg.samples, len(split["train"]))))
    text = [f"# Rewrite pairs: {domain.name}", "",
            f"{len(split['train'])} train + {len(split['val'])} val pairs; per source {dict(per_source)}; "
            f"dropped {dict(dropped) or 'none'}.", "", "Records filtered to the domain:", "", count_table(counts), "",
            "## Sample pairs", ""]
    text += [f"- {p['plain']!r} -> {p['styled']!r}" for p in samples]
    atomic_write_text(out / "report.md", "\n".join(text) + "\n")
    log.info("wrote %d rewrite pairs for %s", len(table), domain.name)
    return out
