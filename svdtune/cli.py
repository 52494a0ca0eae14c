"""`svdtune <command> [--config file.yaml] [key=value ...]`

Every command is a dataclass config (defaults < YAML file < dotted overrides) and a function.
Bad input (unknown key, missing model folder, invalid value) ends with one `error:` line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings

from svdtune.errors import UserError

log = logging.getLogger("svdtune")


def _commands():
    # Imported lazily so `svdtune --help` stays fast.
    from svdtune.app.config import DemoConfig
    from svdtune.data.build import DataBuildConfig, run_data_build
    from svdtune.data.pairs import DataPairsConfig, run_data_pairs
    from svdtune.eval.compare import CompareConfig, run_compare
    from svdtune.eval.harness import EvalConfig, run_eval
    from svdtune.generate import GenerateConfig, run_generate
    from svdtune.kernels.export import ExportConfig, run_export
    from svdtune.quant.job import QuantizeJobConfig, run_quantize
    from svdtune.quickstart import QuickstartConfig, run_quickstart
    from svdtune.train.config import TrainConfig
    from svdtune.rewrite.job import RewriteConfig, run_rewrite
    from svdtune.train.recipe import train_adapter
    from svdtune.train.reward_pairs import RewardPairsConfig, run_reward_pairs
    from svdtune.train.rewriter import RewriterTrainConfig, train_rewriter
    from svdtune.train.reference.recipe import FamilyConfig, train_family

    return {
        "quickstart": (QuickstartConfig, run_quickstart),
        "generate": (GenerateConfig, run_generate),
        "quantize": (QuantizeJobConfig, run_quantize),
        "train": (TrainConfig, train_adapter),
        "train-reference": (FamilyConfig, train_family),
        "train-rewriter": (RewriterTrainConfig, train_rewriter),
        "reward-pairs": (RewardPairsConfig, run_reward_pairs),
        "rewrite": (RewriteConfig, run_rewrite),
        "export": (ExportConfig, run_export),
        "eval": (EvalConfig, run_eval),
        "compare": (CompareConfig, run_compare),
        "demo": (DemoConfig, _run_demo),
        "data build": (DataBuildConfig, run_data_build),
        "data pairs": (DataPairsConfig, run_data_pairs),
    }


HELP = {
    "quickstart": "generate, score and report with the reference models",
    "generate": "text-to-image: --prompt TEXT (repeatable) [model=ref-dit steps=30 ...]",
    "quantize": "SVDQuant W4A4 (or a baseline) a pipeline's denoiser: calibrate, fit, save",
    "train": "train a LoRA domain adapter on the 4-bit backbone (distillation + domain loss, resumable)",
    "train-reference": "train the reference model family from scratch (resumable)",
    "train-rewriter": "LoRA-tune a small LLM to rewrite plain prompts into domain styles (resumable)",
    "reward-pairs": "rewriter pairs ranked by image reward: sample rewrites, render them with the domain's model, keep the best",
    "rewrite": "rewrite prompts into a domain's style: PROMPT ... --domain pastel [--rewriter RUN]",
    "export": "export trained adapters: --run RUN[:STRENGTH] (repeatable) [format=svdq-merged|folded|lora|kohya]",
    "eval": "generate prompt sets with model variants (16-bit, W4A4, W4A4 + adapter), score, cost, report",
    "compare": "several eval outputs side by side in one report: DIR_A DIR_B ...",
    "demo": "gradio app: text / image / sketch to image with 16-bit, W4A4 and W4A4 + adapter variants [--host --port]",
    "info": "versions, device and the installed reference models",
}
DATA_HELP = {
    "build": "filter caption sources to a domain: --domain food --sources coco=PATH,mjhq=PATH --out DIR",
    "pairs": "(plain -> domain-style) prompt pairs for the rewriter, from the same sources",
}


def _data_flags(args) -> list[str]:
    """`--sources/--out` are shorthands for the overrides sources=, output_dir=."""
    out = []
    if args.sources:
        pairs = [item.partition("=") for item in args.sources.split(",") if item]
        bad = [p[0] for p in pairs if not p[1]]
        if bad:
            raise UserError(f"--sources: {bad[0]!r} is not name=path (for example coco=/data/coco,mjhq=/data/mjhq)")
        out.append("sources=" + json.dumps({name: path for name, _, path in pairs}))
    return out + ([f"output_dir={args.out}"] if args.out else [])


def _run_demo(cfg):
    from svdtune.app.server import run_demo  # imports gradio: only when the demo runs

    return run_demo(cfg)


def _flag_overrides(args) -> list[str]:
    """Flags that are shorthands for overrides: --prompt (prompts=), --run (runs=), --model, --backend,
    --domain, --rewriter, --host, --port."""
    out = []
    for flag, key in (("prompt", "prompts"), ("run", "runs")):
        if getattr(args, flag, None):
            out.append(f"{key}={json.dumps(getattr(args, flag))}")
    return out + [f"{key}={getattr(args, key)}" for key in ("model", "backend", "domain", "rewriter", "host", "port")
                  if getattr(args, key, None) is not None]  # --port 0 is a port (any free one)


def info() -> None:
    import importlib.metadata as md

    import torch

    from svdtune.pipelines import REFERENCE_DIR, REFERENCE_MODELS

    for pkg in ("svdtune", "torch", "diffusers", "transformers", "peft", "accelerate", "triton"):
        try:
            print(f"{pkg:14s} {md.version(pkg)}")
        except md.PackageNotFoundError:
            print(f"{pkg:14s} not installed")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{'device':14s} {device}")
    for name in (*REFERENCE_MODELS, "evaluator"):
        path = REFERENCE_DIR / name
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20 if path.is_dir() else 0
        state = f"{size:.1f} MiB at {path}" if size else "missing (./launch.sh train-reference)"
        print(f"{name:14s} {state}")


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    for name in ("diffusers", "transformers", "huggingface_hub", "bitsandbytes"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)


def _job_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--config", help="YAML config file (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. steps=30")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="svdtune", description="4-bit SVDQuant diffusion + domain LoRA trainer")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, text in HELP.items():
        p = sub.add_parser(name, help=text, description=text)
        if name != "info":
            _job_arguments(p)
        if name == "generate":
            p.add_argument("--prompt", action="append", help="prompt text (repeat for several)")
            p.add_argument("--model", help="reference name, diffusers folder, quantized folder or svdq export")
            p.add_argument("--backend", help="kernel for quantized models: auto, cpu, cpu-fast, cpu-exact, reference")
        if name == "rewrite":
            p.add_argument("--prompt", action="append", help="prompt text (repeatable; bare words work too)")
            p.add_argument("--domain", help="shipped domain name (configs/domains/) or a domain YAML file")
            p.add_argument("--rewriter", help="train-rewriter run folder, or a causal LM (smollm2: untuned)")
        if name == "export":
            p.add_argument("--run", action="append", help="training run folder, optionally :strength (repeatable)")
        if name == "demo":
            p.add_argument("--host", help="address to listen on (default 127.0.0.1: this machine only)")
            p.add_argument("--port", type=int, help="port (default 7860)")
    data = sub.add_parser("data", help="domain subsets and rewrite pairs from caption datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="step")
    for name, text in DATA_HELP.items():
        p = _job_arguments(data_sub.add_parser(name, help=text, description=text))
        p.add_argument("--domain", help="shipped domain name (configs/domains/) or a domain YAML file")
        p.add_argument("--sources", help="comma-separated name=path, name one of coco, mjhq, dci, generic, world")
        p.add_argument("--out", help="output folder")
    # Positionals (overrides, bare prompts) may follow flags: argparse leaves those unmatched.
    args, extra = parser.parse_known_args(argv)
    if any(e.startswith("-") for e in extra) or (extra and args.command == "info"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = args.overrides + extra
    if args.command == "data":
        args.command = f"data {args.data_command}"
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    _quiet_libraries()
    try:
        if args.command == "info":
            info()
            return 0
        from svdtune.config import load_config

        config_cls, run = _commands()[args.command]
        overrides = list(args.overrides)
        if args.command.startswith("data "):
            overrides = _data_flags(args) + overrides
        if args.command == "compare":  # `svdtune compare DIR_A DIR_B`: bare arguments are eval folders
            dirs = [o for o in overrides if "=" not in o]
            overrides = [o for o in overrides if "=" in o] + ([f"dirs={json.dumps(dirs)}"] if dirs else [])
        if args.command == "rewrite":  # bare arguments are prompts
            args.prompt = (args.prompt or []) + [o for o in overrides if "=" not in o]
            overrides = [o for o in overrides if "=" in o]
        overrides = _flag_overrides(args) + overrides
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise UserError(f"{bad[0]!r} is not a key=value override" +
                            ("; pass prompts with --prompt" if args.command == "generate" else ""))
        cfg = load_config(config_cls, args.config, overrides)
        result = run(cfg)
        if result is not None:
            print(f"svdtune {args.command}: wrote {result}")
        return 0
    except (UserError, ValueError) as e:
        print(f"svdtune {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"svdtune {args.command}: interrupted (re-run to resume where supported)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
