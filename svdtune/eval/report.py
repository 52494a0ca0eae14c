"""report.md of an eval (or of several, from `svdtune compare`): tables, plots, grids, notes."""

from __future__ import annotations

from pathlib import Path

from svdtune.eval import summary
from svdtune.eval.plots import write_plots as _write_plots

ALIGN_KEYS = ("shape", "colour", "size", "position", "count", "all", "style")
FD_NAMES = ("FID", "FD-evaluator", "FD-AlexNet")


def fmt(x, digits: int = 2) -> str:
    if x is None:
        return "-"
    if x == float("inf"):
        return "inf"
    return f"{x:.{digits}f}"


def _table(header: list[str], body: list[list[str]], numeric_from: int = 1) -> list[str]:
    align = ["---"] * numeric_from + ["---:"] * (len(header) - numeric_from)
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|", *["| " + " | ".join(r) + " |" for r in body]]


def quality_table(results: dict, rows: list[dict]) -> list[str]:
    fds = [n for n in FD_NAMES if any(n in r["fd"] for r in rows)]
    n_fd = results.get("reference", {}).get("fd_images", {})
    optional = [(k, name) for k, name in (("clip", "CLIP score"), ("image_reward", "ImageReward"))
                if any(r[k] is not None for r in rows)]
    styles = list(dict.fromkeys(n for r in rows for n in r["style"]))  # the styled prompt sets, in order
    header = ["variant", "model", "kind", "alignment all (%)", *[f"style, {n} (%)" for n in styles],
              *[f"{n} ({n_fd.get(n, '?')} images)" for n in fds],
              "LPIPS vs 16-bit", "PSNR vs 16-bit (dB)", "SSIM vs 16-bit", *[name for _, name in optional]]
    body = []
    ref = summary.reference_row(results)
    if ref:
        body.append([ref["label"], "-", "-", fmt(ref["align_all"], 1),
                     *[fmt(ref["style"].get(n), 1) for n in styles],
                     *[fmt(ref["fd"].get(n)) + (" (floor)" if n in ref["fd"] else "") for n in fds],
                     "-", "-", "-", *["-" for _ in optional]])
    for r in rows:
        body.append([r["label"], r["model"], r["kind"], fmt(r["align_all"], 1),
                     *[fmt(r["style"].get(n), 1) for n in styles],
                     *[fmt(r["fd"].get(n)) for n in fds], fmt(r["lpips"], 4), fmt(r["psnr"]), fmt(r["ssim"], 4),
                     *[fmt(r[k]) for k, _ in optional]])
    return _table(header, body, 3)


def alignment_table(results: dict) -> list[str]:
    body = []
    ref = (results.get("reference") or {}).get("alignment", {})
    entries = [("reference", ref)] + [(label, r["alignment"]) for label, r in results["variants"].items()]
    for label, by_set in entries:
        for name, a in by_set.items():
            body.append([label, name, *[fmt(a.get(k), 1) for k in ALIGN_KEYS]])
    return _table(["variant", "prompt set", *ALIGN_KEYS], body, 2) if body else []


def cost_table(rows: list[dict]) -> list[str]:
    memory = {r["memory"] for r in rows if r["memory"]}
    mem_name = "CUDA max allocated" if memory == {"cuda_allocated"} else "peak RSS"
    header = ["variant", "s / image (batch 1)", "ms / step", f"s / image ({summary.batch_label(rows)})",
              f"{mem_name} (MiB)", "added by the variant (MiB)", "denoiser (MiB)", "adapter (MiB)", "on disk (MiB)",
              "adapter on disk (MiB)", "quantize (s)", "rank (branch + adapter)"]
    body = [[r["label"], fmt(r["image_s"], 3), fmt(r["step_ms"], 1), fmt(r["batch_image_s"], 3), fmt(r["peak_mib"], 0),
             fmt(r["variant_added_mib"], 0), fmt(r["denoiser_mib"], 1), fmt(r["adapter_mib"], 2), fmt(r["disk_mib"], 1),
             fmt(r["adapter_disk_mib"], 2), fmt(r["quantize_s"], 1),
             f"{r['rank_branch']} + {r['rank_adapter']}" if r["kind"] != "16-bit" else "-"] for r in rows]
    return _table(header, body)


def settings_line(results: dict) -> str:
    s, env = results["settings"], results["environment"]
    sets = ", ".join(f"{name} ({len(info['prompts'])})" for name, info in results["prompt_sets"].items())
    return (f"Prompt sets: {sets}. {s['steps']} steps, guidance {s['guidance_scale']}, seed {s['seed']} "
            f"(image i of each set: seed + i), {s['dtype']} on {env['device']} ({env['threads']} threads), "
            f"quantized layers on the `{s['backend']}` backend. torch {env['versions'].get('torch')}, diffusers "
            f"{env['versions'].get('diffusers')}.")


def render_report(results: dict, title: str, preface: list[str] = (), link_prefix: str = "") -> str:
    """The markdown report; `link_prefix` (e.g. "eval/") when it is embedded in a file in another
    folder than the eval's, so that its plot and grid links still resolve."""
    rows = summary.rows(results)
    lines = [f"# {title}", "", *preface]
    if "seconds" in results:
        lines += [settings_line(results) + f" Wall time: {results['seconds']:.0f} s.", ""]
    lines += ["## Quality", "",
              "Alignment: the world evaluator's judgement, % of images with every object right and nothing "
              "extra (mean over the world prompt sets); style: % of a styled set's images in its style. Fréchet "
              "distances against the sets' reference images; the reference row's value is the floor: an "
              "independent second draw of the same size. LPIPS / PSNR / SSIM against the 16-bit source model's "
              "images for the same prompts and seeds.", "",
              *quality_table(results, rows), ""]
    align = alignment_table(results)
    if align:
        lines += ["## World alignment per prompt set (%)", "", *align, ""]
    lines += ["## Cost", "",
              "Latency: warm, median of repeats; per step from the difference of full and 1-step runs. Memory: the "
              "process's peak while the variant ran (CPU: resident set, which also holds what earlier variants left), "
              "and what loading and generating the variant added to it. Denoiser "
              "size counts the 4-bit layers as packed and every other tensor (and the adapter) in 16 bits; on "
              "disk is the files as saved (a quantize folder keeps the 16-bit layers in the model's dtype).", "",
              *cost_table(rows), ""]
    for plot in results.get("plots", []):
        lines += [f"![{Path(plot).stem}]({link_prefix}{plot})", ""]
    if results.get("grids"):
        lines += ["## Images (each prompt's row: the reference, then every variant, same seed)", ""]
        lines += [f"![{Path(g).stem}]({link_prefix}{g})" for g in results["grids"]] + [""]
    if results.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in results["notes"]], ""]
    return "\n".join(lines)


def write_plots(out: Path, results: dict) -> list[Path]:
    paths = _write_plots(out, summary.rows(results))
    results["plots"] = [str(p.relative_to(out)) for p in paths]
    return paths
