"""One flat row per variant from an eval's results.json: what the tables and plots show."""

from __future__ import annotations

import statistics
from pathlib import Path

from svdtune.data import world


def styled(prompts: list[str]) -> bool:
    """The prompts name a world style other than plain (their style accuracy is a domain metric)."""
    return any(world.prompt_style(p) not in (None, "plain") for p in prompts)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def model_name(path: str) -> str:
    return Path(path).name or path


def alignment_headline(alignment: dict, prompt_sets: dict) -> tuple[float | None, dict[str, float]]:
    """(mean `all` over the world sets, style accuracy of each set that names a non-plain style)."""
    styles = {n: a["style"] for n, a in alignment.items() if "style" in a and styled(prompt_sets[n]["prompts"])}
    return _mean(a["all"] for a in alignment.values()), styles


def rows(results: dict) -> list[dict]:
    out = []
    for label, r in results["variants"].items():
        align_all, style = alignment_headline(r["alignment"], results["prompt_sets"])
        vs = r.get("vs_16bit") or {}
        cost, size, ranks = r["cost"], r["size"], r["ranks"]
        out.append({
            "label": label, "kind": r["kind"], "model": model_name(r["source"]), "align_all": align_all,
            "style": style, "fd": r.get("fd", {}), "lpips": vs.get("LPIPS"), "psnr": vs.get("PSNR"),
            "ssim": vs.get("SSIM"), "clip": r.get("clip_score"), "image_reward": r.get("image_reward"),
            "image_s": cost.get("image_s"), "step_ms": cost.get("step_ms"), "batch_image_s": cost["batch_image_s"],
            "batch_size": cost["batch_size"], "peak_mib": cost.get("peak_mib"),
            "variant_added_mib": cost.get("variant_added_mib"),
            "memory": cost.get("memory"), "denoiser_mib": size["denoiser_mib"], "adapter_mib": size["adapter_mib"],
            "disk_mib": size["disk_mib"], "adapter_disk_mib": size["adapter_disk_mib"], "quantize_s": size["quantize_s"],
            "rank_branch": ranks["branch"], "rank_adapter": ranks["adapter"],
        })
    return out


def reference_row(results: dict) -> dict | None:
    """The reference images' own scores: alignment ceiling and Fréchet floor (None when no set has any)."""
    ref = results.get("reference") or {}
    if not ref.get("alignment") and not ref.get("fd"):
        return None
    align_all, style = alignment_headline(ref.get("alignment", {}), results["prompt_sets"])
    sources = sorted({s["reference"] for s in results["prompt_sets"].values() if s["reference"]})
    return {"label": f"reference ({', '.join(sources)})", "align_all": align_all, "style": style,
            "fd": ref.get("fd", {})}


def batch_label(rows: list[dict]) -> str:
    """'batch 16', or, for evals run with different batch sizes (svdtune compare), each row's."""
    sizes = {r["batch_size"] for r in rows}
    return f"batch {sizes.pop()}" if len(sizes) == 1 else "batch " + " / ".join(str(r["batch_size"]) for r in rows)
