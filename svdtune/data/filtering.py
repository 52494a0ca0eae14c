"""Domain filtering, stage by stage, each dropped record keeping the reason it was dropped.

Order (the issue's): category match -> keyword / regex match -> embedding similarity for the
captions neither decided -> exact and near-duplicate removal -> balanced sampling across sources
-> deterministic train/val split by id hash. `decide` works on a whole Dataset with batched `map`
(parallel with num_proc); the later stages work on numpy arrays of the survivors.
"""

from __future__ import annotations

import hashlib
import re

import datasets
import numpy as np

from svdtune.data.domains import Domain, Mask

KEEP, DROP, UNDECIDED = 1, 0, -1


def decide(ds: datasets.Dataset, domain: Domain, num_proc: int | None = None) -> datasets.Dataset:
    """Adds `decision` (KEEP / DROP / UNDECIDED) and `reason` from categories and keywords.

    Negative phrases (depictions among them) are masked out first; a veto keyword left rules the
    domain out, a caption with a keyword left is kept, one whose only match was negative is
    dropped, the rest wait for the embedding stage."""
    kw, neg, veto = domain.keyword_pattern(), domain.negative_pattern(), domain.veto_pattern()
    return ds.map(_decide_batch, batched=True, batch_size=10_000, num_proc=num_proc, desc="keywords",
                  fn_kwargs={"categories": list(domain.categories), "keywords": kw.pattern if kw else "",
                             "negatives": neg.sources if neg else [], "vetoes": veto.pattern if veto else ""})


def _decide_batch(batch, categories, keywords, negatives, vetoes):
    kw, veto = (re.compile(p, re.IGNORECASE) if p else None for p in (keywords, vetoes))
    neg = Mask(negatives) if negatives else None
    decisions, reasons = [], []
    for short, long, category in zip(batch["short_caption"], batch["long_caption"], batch["category"]):
        text = f"{short} {long}"
        masked = neg.sub(" ", text) if neg is not None else text  # "teddy bear" is not a bear
        if categories and category:  # the source says what the image is: trust it
            d, r = (KEEP, "category match") if category in categories else (DROP, "other category")
        elif veto is not None and veto.search(masked):  # a painted mountain is no outdoor context
            d, r = DROP, "veto keyword"
        elif kw is not None and kw.search(masked):
            d, r = KEEP, "keyword match"
        elif masked != text:
            d, r = DROP, "negative keyword"
        else:
            d, r = UNDECIDED, ""
        decisions.append(d)
        reasons.append(r)
    return {"decision": decisions, "reason": reasons}


def similarity(vectors: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Max cosine of each (unit) vector to the domain's anchor vectors (description, examples)."""
    return (vectors @ anchors.T).max(axis=1) if len(vectors) else np.zeros(0, np.float32)


def by_similarity(sim: np.ndarray, threshold: float, top_k: int = 0) -> np.ndarray:
    """Boolean mask of the undecided captions that the embedding stage keeps."""
    if top_k > 0:
        keep = np.zeros(len(sim), bool)
        keep[np.argsort(-sim, kind="stable")[:top_k]] = True
        return keep
    return sim >= threshold


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def exact_duplicates(captions: list[str]) -> np.ndarray:
    """True for every caption whose normalised text appeared earlier."""
    seen, dup = set(), np.zeros(len(captions), bool)
    for i, c in enumerate(captions):
        key = normalise(c)
        dup[i] = key in seen
        seen.add(key)
    return dup


def near_duplicates(vectors: np.ndarray, threshold: float, block: int = 2048) -> np.ndarray:
    """True for every vector within cosine `threshold` of an earlier kept one (greedy, in order).

    Each block of rows is compared with all earlier rows in one matrix product; the greedy pass
    then visits only the (few) pairs above the threshold, in row order.
    """
    n = len(vectors)
    dup = np.zeros(n, bool)
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows, cols = np.nonzero(vectors[start:stop] @ vectors[:stop].T >= threshold)
        earlier = cols < rows + start
        for i, j in zip(rows[earlier] + start, cols[earlier]):
            if not dup[j]:  # final already: j < i, and rows come in order
                dup[i] = True
    return dup


def id_hash(ids: list[str], salt: str = "") -> np.ndarray:
    """A stable number in [0, 1) per id. The split uses the plain hash, which records are kept
    (duplicates, caps) a salted one: one hash for both would send a capped source's survivors,
    the lowest hashes, all to the validation split."""
    return np.array([int.from_bytes(hashlib.sha1((salt + i).encode()).digest()[:8], "big") / 2**64 for i in ids])


def balance(sources: list[str], order: np.ndarray, cap: int) -> np.ndarray:
    """True for records kept when each source is capped at `cap` (lowest hash first)."""
    keep = np.zeros(len(sources), bool)
    counts: dict[str, int] = {}
    for i in np.argsort(order, kind="stable"):
        if counts.get(sources[i], 0) < cap:
            counts[sources[i]] = counts.get(sources[i], 0) + 1
            keep[i] = True
    return keep
