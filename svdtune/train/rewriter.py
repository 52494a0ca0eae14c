"""`svdtune train-rewriter`: LoRA SFT of a small causal LLM on (plain -> domain style) prompt pairs.

    svdtune data pairs --domain pastel --sources world=2000 --out data/pastel-pairs    # per domain
    svdtune train-rewriter --config configs/rewriter/world.yaml [steps=100 resume=latest ...]
    ./launch.sh train-rewriter --nproc 2 --config configs/rewriter/world.yaml          # DDP

Each pair becomes a chat: an instruction naming the pair's domain and quoting its style terms,
the plain prompt, and the styled prompt as the answer; the loss is on the answer's tokens only.
The base may be 4-bit: bitsandbytes NF4 (QLoRA) or svdtune's SVDQuant W4A4 on the decoder's
Linear layers (calibrated on the training chats), whose LoRA layers are the diffusion adapters'.
Accelerator, batch draws, adapter-only checkpoints and resume are the adapter trainer's
(svdtune.train.loop). A second stage starts from a finished run's adapter (`init_adapter`) and
fine-tunes it on `svdtune reward-pairs` (rewrites ranked by the images they make).

Writes to output_dir: config.yaml, backbone/ (SVDQuant base), checkpoints/step-N/, history.jsonl,
adapter/ (peft format), merged/ (with export_merged; full model + tokenizer), summary.json
(held-out loss and rewrite scores).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

from svdtune.config import atomic_write_text, load_config, save_config, to_dict
from svdtune.data.domains import load_domain
from svdtune.errors import UserError
from svdtune.quant.config import QuantConfig
from svdtune.rewrite.chat import IGNORE, encode_pair
from svdtune.rewrite.rewriter import DecodingConfig
from svdtune.train.config import OptimSettings
from svdtune.train.loop import (append_history, make_accelerator, make_optimizer, own_rows, peak_memory_mib,
                                register_adapter_hooks, resume, save_checkpoint, tracker_kwargs)

log = logging.getLogger("svdtune")
LLM_LINEARS = r"(q|k|v|o|gate|up|down)_proj$"  # Llama / Qwen / Mistral / SmolLM decoder projections


@dataclasses.dataclass
class RewriterLora:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target: str = LLM_LINEARS                 # regex over module names


@dataclasses.dataclass
class RewriterTrainConfig:
    base: str = "smollm2"                     # causal LM: "smollm2" (offline default), a folder or a hub id
    base_quant: Literal["none", "nf4", "svdquant"] = "none"
    quant: QuantConfig = dataclasses.field(default_factory=lambda: QuantConfig(include=[LLM_LINEARS]))
    data: list[str] = dataclasses.field(default_factory=lambda: ["data/pastel-pairs"])  # `data pairs` folders
    init_adapter: str = ""                    # a train-rewriter run whose adapter this one starts from
    max_tokens: int = 160                     # longer chats are left out (counted in summary.json)
    output_dir: str = "runs/rewriter/world"
    adapter_name: str = "default"
    seed: int = 0
    steps: int = 60
    batch_size: int = 16                      # per process and micro-step
    grad_accum: int = 1
    mixed_precision: Literal["no", "bf16", "fp16"] = "bf16"
    lora: RewriterLora = dataclasses.field(default_factory=RewriterLora)
    optim: OptimSettings = dataclasses.field(default_factory=lambda: OptimSettings(lr=3e-4, warmup=10))
    eval_pairs: int = 64                      # held-out pairs rewritten at the end (summary.json)
    decoding: DecodingConfig = dataclasses.field(default_factory=DecodingConfig)  # for those rewrites
    save_every: int = 50
    keep_last: int = 2
    resume: str = ""                          # "latest", a checkpoint folder, or ""
    log_with: Literal["wandb", "tensorboard", "none"] = "wandb"
    log_every: int = 10
    deepspeed: str = ""
    device: str = ""
    export_merged: bool = False               # also write merged/ (base with the adapter folded in)

    def validate(self) -> None:
        for key in ("steps", "batch_size", "grad_accum", "save_every", "keep_last", "log_every", "max_tokens"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if not self.data:
            raise ValueError("data must name at least one `svdtune data pairs` output folder")
        if self.lora.rank <= 0:
            raise ValueError(f"lora.rank must be positive, got {self.lora.rank}")
        self.decoding.validate()


# ---------------------------------------------------------------- data

def load_pairs(folders: list[str], split: str):
    """The `split` of every pairs folder, concatenated (each pair names its domain)."""
    import datasets

    parts = []
    for folder in folders:
        path = Path(folder) / "dataset"
        if not path.is_dir():
            raise UserError(f"{folder!r} is not a `svdtune data pairs` output folder (no dataset/ in it)")
        ds = datasets.load_from_disk(str(path))
        if split not in ds:
            raise UserError(f"{path}: no {split!r} split (found {', '.join(ds)})")
        parts.append(ds[split])
    return datasets.concatenate_datasets(parts)


def encode_pairs(pairs, tokenizer, max_tokens: int) -> tuple[list[dict], int]:
    """Tokenized chats with answer-only labels; chats longer than max_tokens are left out."""
    domains = {name: load_domain(name) for name in set(pairs["domain"])}
    encoded = [encode_pair(tokenizer, domains[d], p, s) for d, p, s in zip(pairs["domain"], pairs["plain"], pairs["styled"])]
    kept = [e for e in encoded if len(e["input_ids"]) <= max_tokens]
    return kept, len(encoded) - len(kept)


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded batch (every answer ends at the last position); padding is masked out of
    attention and loss, and positions count from each row's first real token."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), IGNORE)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, width - n:], labels[i, width - n:], mask[i, width - n:] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "position_ids": (mask.cumsum(1) - 1).clamp_min(0)}


def answer_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy on the answer tokens, with the LM head applied only to the last
    positions that predict them: the vocabulary projection of the instruction and prompt (most
    of each chat) is neither computed nor kept for backward."""
    labels = batch["labels"]
    answer = (labels != IGNORE).any(0).nonzero()
    keep = labels.shape[1] - int(answer[0]) + 1 if len(answer) else 1
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], logits_to_keep=keep).logits
    targets = labels[:, labels.shape[1] - keep + 1:]
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)


# ---------------------------------------------------------------- model

def load_base(cfg: RewriterTrainConfig, device, out: Path | None = None, calibration: list[dict] | None = None):
    """(base model, tokenizer), 4-bit when asked. The SVDQuant base is made once (from the
    `calibration` chats) and kept in out/backbone, so resumed runs and inference share it."""
    from svdtune.llm import load_causal_lm

    if cfg.base_quant == "nf4":
        from transformers import BitsAndBytesConfig

        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        return load_causal_lm(cfg.base, "bfloat16", quantization_config=bnb)
    model, tokenizer = load_causal_lm(cfg.base, "float32", str(device))
    if cfg.base_quant == "svdquant":
        from svdtune.quant.serialize import MANIFEST, load_quantized, save_quantized

        folder = out / "backbone"
        if not (folder / MANIFEST).is_file():
            if calibration is None:
                raise UserError(f"{folder}: the SVDQuant base of this run is missing")
            quantize_llm(model, cfg.quant, calibration, tokenizer.pad_token_id)
            save_quantized(model, folder, source=cfg.base)
        else:
            model = load_quantized(folder, model)
    return model, tokenizer


@torch.no_grad()
def quantize_llm(model, quant: QuantConfig, chats: list[dict], pad_id: int, batch_size: int = 16) -> None:
    """SVDQuant W4A4 of the decoder's Linear layers, calibrated on training chats."""
    from svdtune.quant import quantize
    from svdtune.quant.calibrate import Recording
    from svdtune.quant.quantize import select_layers

    cfg = quant.resolved()
    layers, _ = select_layers(model, cfg)
    with Recording(layers, cfg.calibration.sample_tokens, cfg.calibration.seed, gram=cfg.gptq) as rec:
        for i in tqdm(range(0, len(chats), batch_size), desc="calibrate"):
            batch = collate(chats[i:i + batch_size], pad_id)
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"])
    quantize(model, quant, calibration=rec.stats())


def lora_model(model, cfg: RewriterTrainConfig):
    """peft's PeftModel with LoRA on the target projections (svdtune's LoRA layer on SVDQuant ones)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    lora = cfg.lora
    if cfg.base_quant == "svdquant":
        from svdtune.train.lora import lora_config

        config = lora_config(model, lora.rank, lora.alpha, lora.dropout, lora.target)
        config.task_type = "CAUSAL_LM"
    else:  # names, not the regex: peft full-matches a string where svdtune searches
        names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and re.search(lora.target, n)]
        if not names:
            raise UserError(f"lora.target {lora.target!r} matches no Linear layer of {cfg.base!r}")
        config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=names,
                            task_type="CAUSAL_LM")
    if cfg.base_quant == "nf4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, config, adapter_name=cfg.adapter_name)


def start_from(model, cfg: RewriterTrainConfig) -> None:
    """Load the adapter of run `cfg.init_adapter` into the fresh LoRA (same rank and targets)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    file = Path(cfg.init_adapter) / "adapter" / "adapter_model.safetensors"
    if not file.is_file():
        raise UserError(f"init_adapter: {str(file)!r} not found; give a finished train-rewriter run folder")
    misfit = f"init_adapter: {file} does not fit this LoRA (lora.rank / lora.target differ)"
    try:
        result = set_peft_model_state_dict(model, load_file(file), adapter_name=cfg.adapter_name)
    except RuntimeError as e:  # shapes differ
        raise UserError(f"{misfit}: {str(e).splitlines()[-1].strip()}") from None
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        raise UserError(f"{misfit}: {(result.unexpected_keys or missing)[0]!r}")


def load_tuned(run: str | Path, dtype: str = "bfloat16", device: str = "cpu"):
    """(model, tokenizer) of a finished run, in eval mode: the adapter merged into a 16-bit base,
    or kept beside a 4-bit one (what was trained is what runs)."""
    from peft import PeftModel

    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise UserError(f"{str(run)!r} is not a train-rewriter run (no config.yaml in it)")
    cfg = load_config(RewriterTrainConfig, run / "config.yaml")
    if not (run / "adapter" / "adapter_config.json").is_file():
        raise UserError(f"{run}: the run has not finished (no adapter/ in it); resume it with `svdtune train-rewriter`")
    model, tokenizer = load_base(cfg, device, run)
    if cfg.base_quant == "svdquant":
        from svdtune.train.lora import register
        from peft import LoraConfig

        config = register(LoraConfig.from_pretrained(str(run / "adapter")))
        model = PeftModel.from_pretrained(model, str(run / "adapter"), config=config)
    else:
        model = PeftModel.from_pretrained(model, str(run / "adapter"))
    if cfg.base_quant == "none":
        model = model.merge_and_unload().to(getattr(torch, dtype))
    tokenizer.padding_side = "left"
    return model.eval(), tokenizer


# ---------------------------------------------------------------- the recipe

def train_rewriter(cfg: RewriterTrainConfig) -> Path:
    out = Path(cfg.output_dir)
    acc = make_accelerator(cfg, out)
    main = acc.is_main_process
    if main:
        save_config(cfg, out)
    from svdtune.llm import load_tokenizer

    tokenizer = load_tokenizer(cfg.base)  # the chats first: the SVDQuant base calibrates on them
    train, skipped = encode_pairs(load_pairs(cfg.data, "train"), tokenizer, cfg.max_tokens)
    if not train:
        raise UserError(f"no training pair of {cfg.data} fits max_tokens={cfg.max_tokens}")
    if main:  # rank 0 makes the SVDQuant base once; the others read it
        model, tokenizer = load_base(cfg, acc.device, out, train[:256])
    acc.wait_for_everyone()
    if not main:
        model, tokenizer = load_base(cfg, acc.device, out)
    torch.manual_seed(cfg.seed)  # LoRA's A init
    model = lora_model(model, cfg)
    if cfg.init_adapter:
        start_from(model, cfg)
    from diffusers.optimization import get_scheduler

    from svdtune.train.lora import save_adapter, trainable_parameters

    params = trainable_parameters(model)  # LoRA A/B only: an SVDQuant base's activation clips stay at 1
    optimizer = make_optimizer(params, cfg)
    lr_schedule = get_scheduler(cfg.optim.schedule, optimizer, num_warmup_steps=cfg.optim.warmup,
                                num_training_steps=cfg.steps)
    model, optimizer, lr_schedule = acc.prepare(model, optimizer, lr_schedule)
    model.train()
    register_adapter_hooks(acc, cfg.adapter_name, None)
    acc.init_trackers("svdtune-rewriter", config=to_dict(cfg), init_kwargs=tracker_kwargs(cfg, out))
    start = resume(acc, cfg, out)
    if main and start == 0:
        (out / "history.jsonl").unlink(missing_ok=True)

    global_batch = cfg.batch_size * acc.num_processes * cfg.grad_accum
    bar = tqdm(range(start, cfg.steps), desc="train-rewriter", initial=start, total=cfg.steps, disable=not main,
               mininterval=5)
    for step in bar:
        began = time.perf_counter()
        rows = torch.randint(len(train), (global_batch,), generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + step))
        loss_total = 0.0
        for micro in range(cfg.grad_accum):
            own = rows[own_rows(micro, acc.process_index, acc.num_processes, cfg.batch_size)]
            batch = {k: v.to(acc.device) for k, v in collate([train[i] for i in own], tokenizer.pad_token_id).items()}
            with (nullcontext() if micro == cfg.grad_accum - 1 else acc.no_sync(model)), acc.autocast():
                loss = answer_loss(model, batch)
            acc.backward(loss / cfg.grad_accum)
            loss_total += loss.item() / cfg.grad_accum
        grad_norm = acc.clip_grad_norm_(params, cfg.optim.max_grad_norm)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        record = {"loss": loss_total, "lr": lr_schedule.get_last_lr()[0], "grad_norm": float(grad_norm),
                  "step_time": time.perf_counter() - began, "peak_memory_mib": peak_memory_mib(acc.device)}
        if main:
            append_history(out, {"step": step + 1} | record)
        bar.set_postfix(loss=f"{loss_total:.4f}", refresh=False)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            acc.log(record, step=step + 1)
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            save_checkpoint(acc, out, step + 1, cfg.keep_last)

    if main:
        model = acc.unwrap_model(model).eval()
        save_adapter(model, out / "adapter", cfg.adapter_name)  # flat (peft nests a non-default name)
        summary = {"base": cfg.base, "base_quant": cfg.base_quant, "steps": cfg.steps, "train_pairs": len(train),
                   "skipped_long_pairs": skipped, "held_out": held_out_scores(cfg, model, tokenizer, acc.device)}
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
        if cfg.export_merged:
            export_merged(out, out / "merged")
    acc.wait_for_everyone()
    acc.end_training()
    return out


@torch.no_grad()
def held_out_scores(cfg: RewriterTrainConfig, model, tokenizer, device) -> dict:
    """Loss on held-out pairs (`eval_pairs` of them, drawn across domains), and the model's own
    rewrites of them scored."""
    from svdtune.rewrite.metrics import score_rewriter
    from svdtune.rewrite.rewriter import Rewriter

    pairs = load_pairs(cfg.data, "val")
    if not len(pairs):
        return {}
    pairs = pairs.shuffle(seed=cfg.seed).select(range(min(cfg.eval_pairs, len(pairs))))
    chats, _ = encode_pairs(pairs, tokenizer, cfg.max_tokens)
    losses = [answer_loss(model, {k: v.to(device) for k, v in collate(chats[i:i + 16], tokenizer.pad_token_id).items()}).item()
              for i in range(0, len(chats), 16)]
    loss = {"loss": sum(losses) / len(losses)} if losses else {}  # empty when no pair fits max_tokens
    return loss | score_rewriter(Rewriter(model, tokenizer, cfg.decoding), pairs)


def export_merged(run: str | Path, out: str | Path) -> Path:
    """The run's adapter folded into a 16-bit base: a plain transformers checkpoint + tokenizer."""
    from svdtune.llm import save_pretrained_atomic

    run, out = Path(run), Path(out)
    cfg = load_config(RewriterTrainConfig, run / "config.yaml")
    if cfg.base_quant != "none":
        raise UserError(f"{run}: the adapter was trained on a {cfg.base_quant} base; a merged 16-bit export would "
                        "not be the trained model (use the adapter with that base)")
    model, tokenizer = load_tuned(run, "float32")
    return save_pretrained_atomic(model, tokenizer, out)
