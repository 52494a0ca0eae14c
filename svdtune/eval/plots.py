"""matplotlib figures of an eval (or several, side by side): quality against size, latency bars,
quality against the low-rank width (branch rank + adapter rank) when the variants differ in it."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on these machines, and none needed
import matplotlib.pyplot as plt  # noqa: E402

from svdtune.eval.summary import batch_label  # noqa: E402

KIND_MARKERS = {"16-bit": "o", "W4A4": "s", "W4A4 + adapter": "^"}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def _colours(rows: list[dict]) -> dict[str, str]:
    models = sorted({r["model"] for r in rows})
    return {m: f"C{i % 10}" for i, m in enumerate(models)}


def _quality_axes(rows: list[dict]) -> list[tuple[str, str, bool]]:
    """(row key or fd name, axis label, higher is better) of the quality metrics the rows have."""
    axes = []
    if any(r["align_all"] is not None for r in rows):
        axes.append(("align_all", "world alignment, all correct (%)", True))
    if any(r["psnr"] is not None for r in rows):
        axes.append(("psnr", "PSNR vs 16-bit images (dB)", True))
    fd = next((k for k in ("FID", "FD-evaluator", "FD-AlexNet") if any(k in r["fd"] for r in rows)), None)
    if fd and len(axes) < 2:
        axes.append(("fd:" + fd, f"{fd} (lower is better)", False))
    return axes


def _value(row: dict, key: str):
    return row["fd"].get(key[3:]) if key.startswith("fd:") else row.get(key)


def quality_vs_size(rows: list[dict], path: Path) -> Path | None:
    axes = _quality_axes(rows)
    if not axes:
        return None
    colours = _colours(rows)
    fig, subplots = plt.subplots(1, len(axes), figsize=(5.5 * len(axes), 4.2), squeeze=False)
    for ax, (key, name, _) in zip(subplots[0], axes):
        for r in rows:
            y = _value(r, key)
            if y is None or y == float("inf"):
                continue
            x = r["denoiser_mib"] + r["adapter_mib"]
            ax.scatter(x, y, color=colours[r["model"]], marker=KIND_MARKERS.get(r["kind"], "o"), s=60)
            ax.annotate(r["label"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
        ax.set_xlabel("denoiser + adapter size (MiB)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    subplots[0][0].legend(handles=[plt.Line2D([], [], color=c, marker="o", ls="", label=m) for m, c in colours.items()],
                          fontsize=7, loc="best")
    fig.suptitle("Quality against size (4-bit layers as packed, all else in 16 bits)")
    return _save(fig, path)


def latency_bars(rows: list[dict], path: Path) -> Path:
    timed = all(r["image_s"] is not None for r in rows)
    panels = [("image_s", "s / image (batch 1, warm, median)")] if timed else \
        [("batch_image_s", f"s / image ({batch_label(rows)})")]
    if timed and all(r["step_ms"] is not None for r in rows):
        panels.append(("step_ms", "ms / denoising step (batch 1)"))
    colours = _colours(rows)
    fig, subplots = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 0.45 * len(rows) + 1.6), squeeze=False,
                                 sharey=True)  # labels once, on the left: none in the way of the bar values
    labels = [r["label"] for r in rows][::-1]
    for ax, (key, name) in zip(subplots[0], panels):
        values = [r[key] for r in rows][::-1]
        bars = ax.barh(labels, values, color=[colours[r["model"]] for r in rows][::-1])
        for r, bar in zip(rows[::-1], bars):
            if r["kind"] != "16-bit":
                bar.set_hatch("//" if r["kind"] == "W4A4" else "xx")
        ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)
        ax.margins(x=0.12)
        ax.set_xlabel(name)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Latency (hatched: W4A4, cross-hatched: W4A4 + adapter)")
    return _save(fig, path)


def metric_vs_rank(rows: list[dict], path: Path) -> Path | None:
    """Only when quantized variants differ in their low-rank width (branch rank + adapter rank); a
    line joins the variants of one model and kind (e.g. W4A4 at ranks 16 / 32 / 64)."""
    quantized = [r for r in rows if r["kind"] != "16-bit"]
    if len({r["rank_branch"] + r["rank_adapter"] for r in quantized}) < 2:
        return None
    axes = _quality_axes(quantized)
    if not axes:
        return None
    colours = _colours(rows)
    groups = {}
    for r in quantized:
        groups.setdefault((r["model"], r["kind"]), []).append(r)
    fig, subplots = plt.subplots(1, len(axes), figsize=(5.5 * len(axes), 4.2), squeeze=False)
    for ax, (key, name, _) in zip(subplots[0], axes):
        for (model, kind), members in groups.items():
            points = sorted((r["rank_branch"] + r["rank_adapter"], _value(r, key))
                            for r in members if _value(r, key) not in (None, float("inf")))
            if not points:
                continue
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=KIND_MARKERS.get(kind, "o"),
                    color=colours[model], label=f"{model}, {kind}")
        ax.set_xlabel("low-rank width: branch rank + adapter rank")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Quality against low-rank width")
    return _save(fig, path)


def write_plots(out: Path, rows: list[dict]) -> list[Path]:
    made = [quality_vs_size(rows, out / "plots" / "quality_vs_size.png"),
            latency_bars(rows, out / "plots" / "latency.png"),
            metric_vs_rank(rows, out / "plots" / "quality_vs_rank.png")]
    return [p for p in made if p is not None]
