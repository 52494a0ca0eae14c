"""`svdtune data build`: read sources, filter them to a domain, write the subset and a report.

    svdtune data build --domain food --sources coco=/data/coco,mjhq=/data/mjhq,dci=/data/dci --out data/food
    svdtune data build --domain pastel --sources world=2000 --out data/pastel

Writes to the output folder: dataset/ (a DatasetDict with train and val, `load_from_disk`; each
record keeps a `reason` column saying why it was kept), report.md and report.json (counts per
source kept and dropped, and why), caption_lengths.png, and config.yaml (resolved).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Literal

import datasets
import numpy as np

from svdtune.config import atomic_folder, save_config
from svdtune.data import filtering
from svdtune.data.domains import Domain, load_domain
from svdtune.data.embed import DEFAULT_CACHE, DEFAULT_MODEL, Embedder
from svdtune.data.images import check_batch
from svdtune.data.records import SkipLog
from svdtune.data.report import write_report
from svdtune.data.sources import DISTINCT_IMAGES, GenericColumns, read_source, source_kind
from svdtune.errors import UserError

log = logging.getLogger("svdtune")


@dataclasses.dataclass
class DataBuildConfig:
    domain: str = "pastel"                # a shipped domain name or a domain YAML file
    sources: dict[str, str] = dataclasses.field(default_factory=lambda: {"world": "1000"})
    output_dir: str = "data/pastel"
    columns: GenericColumns = dataclasses.field(default_factory=GenericColumns)  # for generic sources
    check_images: Literal["none", "exists", "decode"] = "exists"
    embeddings: bool = True               # embedding-similarity stage and near-duplicate removal
    embedding_model: str = DEFAULT_MODEL
    embedding_cache: str = str(DEFAULT_CACHE)  # "" = no cache
    near_duplicate: float = 0.95          # cosine above which a caption duplicates an earlier one; 0 = off
    per_source_cap: int = 0               # > 0: at most this many records per source
    balance: bool = False                 # cap every source at the size of the smallest
    val_fraction: float = 0.05
    num_proc: int = 1
    seed: int = 0                         # world scenes
    samples: int = 20                     # sample captions in the report

    def validate(self) -> None:
        if not self.sources:
            raise ValueError("sources: give at least one source, e.g. sources='{coco: /data/coco}'")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction: {self.val_fraction} is not in [0, 1)")
        if self.per_source_cap < 0:
            raise ValueError(f"per_source_cap: {self.per_source_cap} is negative (0 = no cap)")


def read_sources(cfg: DataBuildConfig) -> tuple[datasets.Dataset, dict[str, Counter]]:
    parts, counts = [], {}
    for name, location in cfg.sources.items():
        skips = SkipLog()
        t0 = time.perf_counter()
        ds = read_source(name, location, skips, cfg.columns, seed=cfg.seed)
        log.info("read %d records from %s in %.1f s (%d skipped)", len(ds), name, time.perf_counter() - t0, skips.total())
        counts[name] = Counter({"read": len(ds) + skips.total(), **{f"skipped: {k}": v for k, v in skips.counts.items()}})
        parts.append(ds.add_column("source_name", [name] * len(ds)))
    return datasets.concatenate_datasets(parts), counts


def filter_domain(ds: datasets.Dataset, domain: Domain, cfg: DataBuildConfig, counts: dict[str, Counter],
                  embedder: Embedder | None) -> datasets.DatasetDict:
    drop = defaultdict(Counter)  # why records were dropped, per source

    def dropped(mask: np.ndarray, names: list[str], reason: str | list[str]) -> None:
        for i in np.flatnonzero(mask):
            drop[names[i]][reason if isinstance(reason, str) else reason[i]] += 1

    if cfg.check_images != "none":
        ds = ds.map(check_batch, batched=True, num_proc=cfg.num_proc, fn_kwargs={"check": cfg.check_images},
                    desc="images")
        problems = np.array(ds["image_problem"])
        bad = problems != ""
        dropped(bad, ds["source_name"], [f"skipped: {p}" for p in problems])
        ds = ds.select(np.flatnonzero(~bad)).remove_columns("image_problem")

    ds = filtering.decide(ds, domain, cfg.num_proc)
    decision, reasons, names = np.array(ds["decision"]), ds["reason"], ds["source_name"]
    dropped(decision == filtering.DROP, names, reasons)
    alive = np.flatnonzero(decision != filtering.DROP)
    ds, decision, names = ds.select(alive), decision[alive], [names[i] for i in alive]
    # The caption a model trains on: the long one where the source has it (world, sDCI).
    captions = [long or short for short, long in zip(ds["short_caption"], ds["long_caption"])]

    vectors = None
    undecided = decision == filtering.UNDECIDED
    if embedder is not None:
        vectors = embedder.embed(captions, progress="embed captions")
        anchors = embedder.embed(domain.anchor_texts())
        sim = filtering.similarity(vectors[undecided], anchors)
        keep_sim = filtering.by_similarity(sim, domain.similarity, domain.top_k)
        low = np.zeros(len(ds), bool)
        low[np.flatnonzero(undecided)[~keep_sim]] = True
        dropped(low, names, f"no keyword, similarity < {domain.similarity}" if not domain.top_k
                else f"no keyword, not in the top {domain.top_k} by similarity")
        keep = ~low
    else:
        dropped(undecided, names, "no keyword match (embeddings off)")
        keep = ~undecided

    ids = ds["id"]
    order = filtering.id_hash(ids, salt="keep:")
    # A world record repeats only as the same scene (same id); its caption may be shared by others.
    distinct = np.array([source_kind(n) in DISTINCT_IMAGES for n in names], bool)
    keys = [i if d else c for i, d, c in zip(ids, distinct, captions)]
    steps = [("exact duplicate", lambda idx: filtering.exact_duplicates([keys[i] for i in idx]))]
    if vectors is not None and cfg.near_duplicate > 0:
        steps.append((f"near duplicate (cosine >= {cfg.near_duplicate})",
                      lambda idx: filtering.near_duplicates(vectors[idx], cfg.near_duplicate) & ~distinct[idx]))
    cap = cfg.per_source_cap
    for reason, find in steps:
        idx = np.flatnonzero(keep)
        idx = idx[np.argsort(order[idx], kind="stable")]  # earlier = lower hash: independent of source order
        dup = find(idx)
        mask = np.zeros(len(ds), bool)
        mask[idx[dup]] = True
        dropped(mask, names, reason)
        keep &= ~mask

    idx = np.flatnonzero(keep)
    per_source = Counter(names[i] for i in idx)
    if cfg.balance and per_source:
        cap = min(per_source.values()) if not cap else min(cap, min(per_source.values()))
    if cap:
        kept = filtering.balance([names[i] for i in idx], order[idx], cap)
        mask = np.zeros(len(ds), bool)
        mask[idx[~kept]] = True
        dropped(mask, names, f"over the per-source cap of {cap}")
        keep &= ~mask

    idx = np.flatnonzero(keep)
    for n in set(counts) | set(drop):
        counts.setdefault(n, Counter()).update(drop[n])
        counts[n]["kept"] = sum(1 for i in idx if names[i] == n)
    subset = ds.select(idx).remove_columns(["decision", "source_name"])
    is_val = filtering.id_hash([ids[i] for i in idx]) < cfg.val_fraction
    return datasets.DatasetDict(train=subset.select(np.flatnonzero(~is_val)), val=subset.select(np.flatnonzero(is_val)))


def start(cfg: DataBuildConfig) -> tuple[Domain, datasets.Dataset, dict[str, Counter], Embedder | None]:
    """What `data build` and `data pairs` begin with: the domain, the records read, an embedder."""
    domain = load_domain(cfg.domain)
    save_config(cfg, cfg.output_dir)
    ds, counts = read_sources(cfg)
    if len(ds) == 0:
        raise UserError(f"no usable records in {cfg.sources}; see the skip warnings above")
    embedder = Embedder(cfg.embedding_model, cfg.embedding_cache or None) if cfg.embeddings else None
    return domain, ds, counts, embedder


def run_data_build(cfg: DataBuildConfig) -> Path:
    out = Path(cfg.output_dir)
    t0 = time.perf_counter()
    domain, ds, counts, embedder = start(cfg)
    subset = filter_domain(ds, domain, cfg, counts, embedder)
    save_dataset(subset, out / "dataset")
    seconds = time.perf_counter() - t0
    write_report(out, domain, subset, counts, seconds, cfg.samples, embedder)
    log.info("kept %d train + %d val records for %s in %.1f s", len(subset["train"]), len(subset["val"]),
             domain.name, seconds)
    return out


def save_dataset(ds: datasets.DatasetDict, path: Path) -> None:
    """save_to_disk into a temporary folder, then swap it in: a crash never leaves half a dataset."""
    with atomic_folder(path) as tmp:
        ds.save_to_disk(str(tmp), num_shards={k: 1 for k in ds if len(ds[k]) == 0})  # an empty split still gets a file
