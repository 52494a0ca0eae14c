"""`svdtune compare`: several `svdtune eval` outputs in one report, side by side.

    svdtune compare dirs=[runs/eval/world,runs/eval/world-r16] [output_dir=runs/compare]

Reads each folder's results.json and images, and writes report.md (every variant of every eval in
the same tables, labelled `<eval folder>: <variant>`, and the settings that differ), plots,
grids for the prompt sets the evals share, compare.json and the resolved config to output_dir.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from svdtune.config import atomic_write_text, read_json, save_config
from svdtune.errors import UserError
from svdtune.eval.harness import RESULTS_VERSION
from svdtune.eval.images import write_grids
from svdtune.eval.report import _table, render_report, write_plots

SETTING_KEYS = ("steps", "guidance_scale", "seed", "prompts_per_set", "dtype", "device", "backend", "batch_size",
                "latency_repeats")


@dataclasses.dataclass
class CompareConfig:
    dirs: list[str] = dataclasses.field(default_factory=list)  # `svdtune eval` output folders
    output_dir: str = "runs/compare"
    grid_rows: int = 4

    def validate(self):
        if len(self.dirs) < 2:
            raise ValueError(f"dirs must name at least two `svdtune eval` output folders, got {self.dirs}")
        if self.grid_rows <= 0:
            raise ValueError(f"grid_rows must be a positive integer, got {self.grid_rows}")


def read_eval(folder: str | Path) -> dict:
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise UserError(f"{str(folder)!r} is not a `svdtune eval` output (no results.json in it)")
    results = read_json(path)
    if results.get("results_version") != RESULTS_VERSION:
        raise UserError(f"{path}: results_version is {results.get('results_version')!r}; "
                        f"this svdtune reads version {RESULTS_VERSION}")
    return results


def tags(folders: list[Path]) -> list[str]:
    """Short names for the evals: the folder names, with the parent added where they collide."""
    names = [f.name for f in folders]
    if len(set(names)) < len(names):
        names = [f"{f.parent.name}/{f.name}" for f in folders]
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


def merge(evals: list[tuple[str, Path, dict]]) -> dict:
    first = evals[0][2]
    same_sets = all(e["prompt_sets"] == first["prompt_sets"] for _, _, e in evals)
    merged = {"evals": {tag: str(folder) for tag, folder, _ in evals}, "settings": first["settings"],
              "environment": first["environment"], "prompt_sets": dict(first["prompt_sets"]),
              "reference": first["reference"] if same_sets else {}, "variants": {}, "notes": []}
    for tag, _, e in evals:
        for name, info in e["prompt_sets"].items():
            merged["prompt_sets"].setdefault(name, info)  # the rows' style accuracy looks prompts up here
        merged["variants"] |= {f"{tag}: {label}": record for label, record in e["variants"].items()}
        merged["notes"] += [f"{tag}: {n}" for n in e.get("notes", [])]
    if not same_sets:
        merged["notes"].insert(0, "The evals used different prompt sets: their scores are over different prompts, "
                                  "and only the sets they share are shown in the grids.")
    return merged


def settings_table(evals: list[tuple[str, Path, dict]]) -> list[str]:
    rows = [["folder", *[str(folder) for _, folder, _ in evals]]]
    for key in SETTING_KEYS:
        rows.append([key, *[str(e["settings"].get(key)) for _, _, e in evals]])
    rows.append(["prompt sets", *[", ".join(e["prompt_sets"]) for _, _, e in evals]])
    rows.append(["device (threads)", *[f"{e['environment']['device']} ({e['environment']['threads']})"
                                       for _, _, e in evals]])
    rows.append(["torch", *[str(e["environment"]["versions"].get("torch")) for _, _, e in evals]])
    rows.append(["wall time (s)", *[f"{e.get('seconds', 0):.0f}" for _, _, e in evals]])
    return _table(["", *[tag for tag, _, _ in evals]], rows, numeric_from=len(evals) + 1)


def run_compare(cfg: CompareConfig) -> Path:
    folders = [Path(d) for d in cfg.dirs]
    evals = list(zip(tags(folders), folders, [read_eval(f) for f in folders]))
    out = Path(cfg.output_dir)
    save_config(cfg, out)
    merged = merge(evals)
    write_grids(out, merged, evals, cfg.grid_rows)
    write_plots(out, merged)
    preface = ["## Evals", "", *settings_table(evals), ""]
    atomic_write_text(out / "compare.json", json.dumps(merged, indent=1))
    atomic_write_text(out / "report.md", render_report(merged, "svdtune compare", preface))
    return out
