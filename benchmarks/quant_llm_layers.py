"""W4A4 methods on real weights and real activations: the Linear layers of SmolLM2-135M-Instruct.

    .venv/bin/python benchmarks/quant_llm_layers.py [--calib-seqs 16] [--eval-seqs 24] [--seq-len 256]

Calibration and evaluation text are disjoint halves of an English corpus that ships with Python
(the language reference in pydoc_data). Every method sees the same calibration statistics. Prints
per-method output SQNR (dB) and relative error over all 210 decoder Linear layers (median and
worst layer) measured on held-out tokens, and the perplexity of the whole model with every
decoder Linear quantized by that method (embeddings and the LM head stay 16-bit).
"""

import argparse
import copy
import math
import statistics
import time

import torch

from svdtune.llm import load_smollm2
from svdtune.quant.calibrate import Recording
from svdtune.quant.config import QuantConfig
from svdtune.quant.linear import SVDQuantLinear
from svdtune.quant.metrics import relative_error, sqnr_db
from svdtune.quant.quantize import quantize, select_layers

DECODER_LINEARS = [r"^model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj$"]
METHODS = {
    "W4A4 SVDQuant r32 + GPTQ (int4 g64)": QuantConfig(method="svdquant", gptq=True),
    "W4A4 naive (RTN, int4 g64)": QuantConfig(method="rtn"),
    "W4A4 SmoothQuant (int4 g64)": QuantConfig(method="smoothquant"),
    "W4A4 SVDQuant r32 (int4 g64)": QuantConfig(method="svdquant"),
    "W4A4 SVDQuant r32 (NVFP4 g16)": QuantConfig(method="svdquant", weights="nvfp4", activations="nvfp4", group_size=16),
    "W8A8 (per-channel / per-token)": QuantConfig(method="w8a8"),
    "W4A16 NF4 (bitsandbytes code book, g64)": QuantConfig(method="nf4"),
}


def corpus_ids(tokenizer, n_seqs: int, seq_len: int, part: str) -> torch.Tensor:
    import pydoc_data.topics as topics

    text = "\n\n".join(topics.topics[k] for k in sorted(topics.topics))
    half = len(text) // 2
    ids = tokenizer(text[:half] if part == "calibration" else text[half:], return_tensors="pt").input_ids[0]
    need = n_seqs * seq_len
    if len(ids) < need:
        raise SystemExit(f"the {part} text has {len(ids)} tokens, fewer than {need}")
    return ids[:need].reshape(n_seqs, seq_len)


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, batch: int = 4) -> float:
    nll, count = 0.0, 0
    for i in range(0, len(ids), batch):
        x = ids[i:i + batch]
        out = model(input_ids=x, labels=x)
        nll += out.loss.item() * x[:, 1:].numel()
        count += x[:, 1:].numel()
    return math.exp(nll / count)


@torch.no_grad()
def record(model, layers, ids, tokens, batch=4, gram=False):
    with Recording(layers, sample_tokens=tokens, gram=gram) as rec:
        for i in range(0, len(ids), batch):
            model(input_ids=ids[i:i + batch])
    return rec.stats()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib-seqs", type=int, default=16)
    ap.add_argument("--eval-seqs", type=int, default=24)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--sample-tokens", type=int, default=512, help="calibration rows kept per layer")
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    args = ap.parse_args()
    torch.manual_seed(0)

    model, tokenizer = load_smollm2()
    calib = corpus_ids(tokenizer, args.calib_seqs, args.seq_len, "calibration")
    held_out = corpus_ids(tokenizer, args.eval_seqs, args.seq_len, "evaluation")
    probe = QuantConfig(include=DECODER_LINEARS, exclude=[]).resolved()
    layers, _ = select_layers(model, probe)
    stats = record(model, layers, calib, args.sample_tokens, gram=True)  # GPTQ's Hessians over every token
    test_rows = record(model, layers, held_out, 1024)  # held-out inputs per layer for the SQNR
    print(f"SmolLM2-135M-Instruct: {len(layers)} decoder Linear layers; calibration {calib.numel()} tokens, "
          f"evaluation {held_out.numel()} held-out tokens")

    rows = [("16-bit (reference)", math.inf, math.inf, 0.0, 0.0, perplexity(model, held_out), 0.0)]
    for name in args.methods:
        cfg = METHODS[name]
        cfg.include, cfg.exclude = DECODER_LINEARS, []
        q = copy.deepcopy(model)
        start = time.time()
        quantize(q, cfg, calibration=stats)
        seconds = time.time() - start
        sqnr, rel = [], []
        for layer_name, original in layers.items():
            x = test_rows[layer_name].sample.float()
            y = original(x)
            y_q = q.get_submodule(layer_name)(x)
            sqnr.append(sqnr_db(y, y_q))
            rel.append(relative_error(y, y_q))
        assert all(isinstance(q.get_submodule(n), SVDQuantLinear) for n in layers)
        rows.append((name, statistics.median(sqnr), min(sqnr), statistics.median(rel), max(rel),
                     perplexity(q, held_out), seconds))
        print(f"[{name}: {seconds:.0f} s]", flush=True)
        del q

    print("\n| method | median SQNR (dB) | worst-layer SQNR (dB) | median rel. error | worst rel. error | perplexity | quantize (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, med, worst, rmed, rworst, ppl, sec in rows:
        print(f"| {name} | {med:.2f} | {worst:.2f} | {rmed:.4f} | {rworst:.4f} | {ppl:.3f} | {sec:.0f} |")


if __name__ == "__main__":
    main()
