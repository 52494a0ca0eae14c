"""The prompt rewriter, measured: held-out rewrite quality, latency, and the world end to end.

    .venv/bin/python benchmarks/rewriter_eval.py --run runs/rewriter/world \
        --adapter runs/train/ref-unet-pastel --domain pastel [--pairs data/pastel-pairs ...]

1. Held-out pairs (the `val` splits): chrF against the reference rewrite, content-word retention,
   style-term rate and length, for the untuned base (the instruction alone) and the LoRA-tuned
   rewriter, greedy, raw model output (no guardrail); the tuned one batched (batches decode with
   the 16-bit weights) and one prompt at a time (int8 weights, the cached instruction: how a
   single request runs).
2. Latency on this machine: one prompt (warm, median of 10, KV cache), the same forced to exactly
   40 new tokens, and a batch of 32; with bf16 weights, int8 weights, and int8 + compiled
   decoding. Single prompts start from their domain's cached instruction.
3. End to end: plain prompts of the domain vs their rewrites, fed to the 4-bit model with the
   domain adapter (same seeds), scored by the world evaluator against the plain prompt's objects.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from svdtune.data.domains import load_domain
from svdtune.rewrite.metrics import score_rewriter
from svdtune.rewrite.rewriter import DecodingConfig, Rewriter
from svdtune.train.rewriter import load_pairs

WORLD_PAIRS = [f"data/{d}-pairs" for d in ("pastel", "neon", "striped", "blueprint")]


def latency(run: str, prompts: list[str], domain, **decoding) -> dict:
    def timed(fn):
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out

    rewriter = Rewriter.load(run, DecodingConfig(**decoding))
    forced = Rewriter(rewriter.model, rewriter.tokenizer, DecodingConfig(**decoding | {"max_new_tokens": 40}))
    forced_kwargs = forced.generation_kwargs
    forced.generation_kwargs = lambda *a: forced_kwargs(*a) | {"min_new_tokens": 40}
    rewriter.rewrite(prompts[:2], domain)  # warm-up (and, with compile, the compilations)
    rewriter.generate(prompts[:1], domain, "greedy"), forced.generate(prompts[:1], domain, "greedy")
    single = [timed(lambda: rewriter.generate([p], domain, "greedy")) for p in prompts[:10]]
    tokens = [len(rewriter.tokenizer(a[0]).input_ids) for _, a in single]
    forty = [timed(lambda: forced.generate([p], domain, "greedy"))[0] for p in prompts[:10]]
    batch = min(timed(lambda: rewriter.generate(prompts[:32], domain, "greedy"))[0] for _ in range(2))
    return {"single_s": statistics.median(t for t, _ in single), "single_tokens": statistics.median(tokens),
            "forced40_s": statistics.median(forty), "batch32_s": batch}


def end_to_end(args, rewriter: Rewriter, plains: list[str], references: list[str]) -> dict:
    from svdtune.eval import variants
    from svdtune.eval.rewrites import rewrite_effect
    from svdtune.pipelines import load_evaluator

    domain = load_domain(args.domain)
    rewriter = Rewriter(rewriter.model, rewriter.tokenizer, DecodingConfig(strategy=args.strategy))
    rewrites = [r.text for r in rewriter.rewrite(plains, domain)]
    pipe = variants.load(variants.classify("adapter", args.adapter))
    sets = {"plain": plains, f"rewritten ({args.strategy})": rewrites,
            "plain + style suffix (the guardrail's fallback)": [p + domain.style_suffix for p in plains],
            "reference rewrites (the pairs' styled prompts)": references}
    return rewrite_effect(pipe, load_evaluator(), plains, sets, args.domain, args.steps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/rewriter/world")
    ap.add_argument("--base", default="smollm2")
    ap.add_argument("--pairs", nargs="+", default=WORLD_PAIRS)
    ap.add_argument("--per-domain", type=int, default=64, help="held-out pairs per domain")
    ap.add_argument("--adapter", default="runs/train/ref-unet-pastel", help="a `svdtune train` run of the domain")
    ap.add_argument("--domain", default="pastel")
    ap.add_argument("--prompts", type=int, default=64, help="plain prompts end to end")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--strategy", default="greedy", choices=["greedy", "beam", "sample"], help="decoding end to end")
    ap.add_argument("--parts", default="held-out,latency,end-to-end", help="comma-separated parts to run")
    args = ap.parse_args()
    parts = args.parts.split(",")
    torch.manual_seed(0)

    val = load_pairs(args.pairs, "val")
    keep, seen = [], {}
    for i, d in enumerate(val["domain"]):
        seen[d] = seen.get(d, 0) + 1
        if seen[d] <= args.per_domain:
            keep.append(i)
    val = val.select(keep)
    tuned = Rewriter.load(args.run)
    domain = load_domain(args.domain)
    plains = [p for p, d in zip(val["plain"], val["domain"]) if d == args.domain]
    if "held-out" in parts:
        held_out_table(args, tuned, val, seen)
    if "latency" in parts:
        latency_table(args.run, plains, domain)
    if "end-to-end" in parts:
        references = [s for s, d in zip(val["styled"], val["domain"]) if d == args.domain]
        end_to_end_table(args, tuned, plains, references)


def held_out_table(args, tuned, val, seen):
    one_at_a_time = Rewriter(tuned.model, tuned.tokenizer, DecodingConfig(batch_size=1))
    rows = {"base (instruction only)": score_rewriter(Rewriter.load(args.base), val),
            "LoRA-tuned, batched (16-bit weights)": score_rewriter(tuned, val),
            "LoRA-tuned, one prompt at a time (int8 weights, cached instruction)": score_rewriter(one_at_a_time, val)}
    print(f"\nHeld-out pairs: {len(val)} ({', '.join(f'{d} {n}' for d, n in seen.items())} available), greedy, raw output\n")
    print("| rewriter | chrF | content-word retention (%) | all words kept (%) | style-term rate (%) | mean words |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, s in rows.items():
        print(f"| {name} | {s['chrf']:.1f} | {s['retention']:.1f} | {s['exact_retention']:.1f} | {s['style_rate']:.1f} | "
              f"{s['mean_words']:.1f} |")
    for name, s in rows.items():
        print(f"  e.g. {name}: {val['plain'][0]!r} -> {s['example']!r}")


LATENCY_SETTINGS = {
    "bf16 weights (decoding.int8_weights=false)": dict(int8_weights=False),
    "int8 weights (the default)": {},
    "int8 weights, decoding.compile=true": dict(compile=True),
}


def latency_table(run, plains, domain):
    # The longest rewrites (three objects, about 40 tokens) are the latency case that matters.
    plains = sorted(plains, key=lambda p: -len(p.split()))
    rows = {name: latency(run, plains, domain, **decoding) for name, decoding in LATENCY_SETTINGS.items()}
    print(f"\nLatency ({torch.get_num_threads()} threads, bf16 activations, KV cache, warm; seconds):\n")
    print("| setting | one prompt, median of 10 (new tokens) | one prompt forced to 40 new tokens, median of 10 "
          "| batch of 32 prompts |\n|---|---:|---:|---:|")
    for name, lat in rows.items():
        print(f"| {name} | {lat['single_s']:.3f} ({lat['single_tokens']:.0f}) | {lat['forced40_s']:.3f} | "
              f"{lat['batch32_s']:.3f} |")


def end_to_end_table(args, tuned, plains, references):
    if args.adapter:
        e2e = end_to_end(args, tuned, plains[:args.prompts], references[:args.prompts])
        print(f"\nEnd to end: {len(plains[:args.prompts])} plain {args.domain} prompts vs their rewrites, "
              f"4-bit model + adapter {args.adapter}, {args.steps} steps, same seeds; evaluator %, "
              "alignment against the plain prompt's objects\n")
        print("| prompts | style | colour | shape | count | all objects |\n|---|---:|---:|---:|---:|---:|")
        for name, s in e2e.items():
            if name == "images":
                continue
            print(f"| {name} | {s['style']:.1f} | {s['colour']:.1f} | {s['shape']:.1f} | {s['count']:.1f} | "
                  f"{s['all_objects']:.1f} |")


if __name__ == "__main__":
    main()
