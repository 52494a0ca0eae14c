"""The data-build report: counts per source (read, kept, dropped and why), a caption-length
histogram (PNG) and sample captions, as report.md for people and report.json for programs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import numpy as np

from svdtune.config import atomic_write_text
from svdtune.data.domains import Domain


def count_table(counts: dict[str, Counter]) -> str:
    reasons = sorted({r for c in counts.values() for r in c} - {"read", "kept"})
    head = ["source", "read", "kept", *reasons]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for name, c in counts.items():
        lines.append("| " + " | ".join([name, *(str(c.get(h, 0)) for h in head[1:])]) + " |")
    return "\n".join(lines)


def length_histogram(subset: datasets.DatasetDict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    for column in ("short_caption", "long_caption"):
        words = [len(c.split()) for split in subset.values() for c in split[column] if c]
        if words:  # captions over 120 words go in the last bin, as the legend counts them
            ax.hist([min(w, 120) for w in words], bins=range(0, min(max(words), 120) + 2), alpha=0.6,
                    label=f"{column} ({len(words)})")
    ax.set_xlabel("words per caption (the last bin: 120 or more)")
    ax.set_ylabel("records")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(out: Path, domain: Domain, subset: datasets.DatasetDict, counts: dict[str, Counter],
                 seconds: float, n_samples: int, embedder=None) -> None:
    length_histogram(subset, out / "caption_lengths.png")
    train = subset["train"]
    # evenly spaced, so that every source shows up
    samples = train.select(sorted({round(i) for i in np.linspace(0, len(train) - 1, min(n_samples, len(train)))}))
    summary = {
        "domain": domain.name,
        "train": len(train), "val": len(subset["val"]),
        "seconds": round(seconds, 2),
        "counts": {k: dict(v) for k, v in counts.items()},
        "embedding_cache": {"hits": embedder.hits, "misses": embedder.misses} if embedder else None,
        "samples": [{"id": r["id"], "caption": r["short_caption"]} for r in samples],
    }
    atomic_write_text(out / "report.json", json.dumps(summary, indent=1) + "\n")
    cache = (f"; embeddings: {embedder.hits} from the cache, {embedder.misses} computed" if embedder else "")
    text = [f"# Domain subset: {domain.name}", "",
            f"{len(train)} train + {len(subset['val'])} val records, built in {seconds:.1f} s{cache}.", "",
            count_table(counts), "", "![caption lengths](caption_lengths.png)", "", "## Sample captions", ""]
    text += [f"- `{r['id']}` {r['short_caption']}" for r in samples]
    atomic_write_text(out / "report.md", "\n".join(text) + "\n")
