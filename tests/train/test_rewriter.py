"""`svdtune train-rewriter` on a tiny Llama: outputs, resume, 4-bit bases, merged export."""

import json

import pytest
import torch
from safetensors.torch import load_file

from svdtune.config import load_config
from svdtune.errors import UserError
from svdtune.quant.metrics import relative_error
from svdtune.train.rewriter import RewriterTrainConfig, export_merged, load_tuned, train_rewriter

TINY = ["batch_size=4", "save_every=2", "log_with=none", "eval_pairs=4", "lora.rank=4", "device=cpu",
        "mixed_precision=no"]


def config(tiny_llm, pairs, out, *extra):
    return load_config(RewriterTrainConfig, "configs/rewriter/world.yaml",
                       [f"base={tiny_llm}", f"data={json.dumps([str(p) for p in pairs])}", f"output_dir={out}",
                        *TINY, *extra])


def adapter(run):
    return load_file(run / "adapter" / "adapter_model.safetensors")


def test_train_resume_and_export(tiny_llm, world_pairs, tmp_path):
    full = train_rewriter(config(tiny_llm, world_pairs, tmp_path / "full", "steps=4"))
    for name in ("config.yaml", "history.jsonl", "summary.json", "adapter/adapter_config.json"):
        assert (full / name).is_file(), name
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    summary = json.loads((full / "summary.json").read_text())
    assert summary["train_pairs"] == 40 and summary["held_out"]["n"] == 4
    assert set(summary["held_out"]) >= {"loss", "chrf", "retention", "style_rate", "mean_words"}

    # Stopped after 2 steps, then resumed to 4: the same adapter as the uninterrupted run.
    half = tmp_path / "half"
    train_rewriter(config(tiny_llm, world_pairs, half, "steps=2"))
    train_rewriter(config(tiny_llm, world_pairs, half, "steps=4", "resume=latest"))
    a, b = adapter(full), adapter(half)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

    # The merged export is the tuned model: same logits as base + adapter.
    merged = export_merged(full, tmp_path / "merged")
    tuned, tok = load_tuned(full, "float32")
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    ids = tok(["a red circle and a blue square"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert relative_error(plain(ids).logits, tuned(ids).logits) < 1e-5


def test_a_second_stage_starts_from_the_first_runs_adapter(tiny_llm, world_pairs, tmp_path):
    first = train_rewriter(config(tiny_llm, world_pairs, tmp_path / "first", "steps=2"))
    still = train_rewriter(config(tiny_llm, world_pairs, tmp_path / "second", "steps=1", "optim.lr=0",
                                  f"init_adapter={first}"))  # lr 0: whatever it starts from, it ends with
    a, b = adapter(first), adapter(still)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UserError, match="does not fit this LoRA"):
        train_rewriter(config(tiny_llm, world_pairs, tmp_path / "third", "steps=1", "lora.rank=8", f"init_adapter={first}"))


def test_svdquant_base_trains_the_deployed_model(tiny_llm, world_pairs, tmp_path):
    from svdtune.train.lora import SVDQuantLoraLayer

    run = train_rewriter(config(tiny_llm, world_pairs, tmp_path / "w4a4", "steps=2", "base_quant=svdquant",
                                "quant.rank=8", "quant.smooth_alphas=[0.5]", "quant.shrink_grid=[1.0]",
                                "adapter_name=world"))  # a named adapter is saved where readers look
    assert (run / "backbone" / "quant_manifest.json").is_file()
    model, tok = load_tuned(run)
    layers = [m for m in model.modules() if isinstance(m, SVDQuantLoraLayer)]
    assert len(layers) == 14  # 7 projections x 2 layers, LoRA kept beside the 4-bit base
    trained = adapter(run)
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(loaded) == len(trained) and all(v.abs().sum() > 0 for k, v in loaded.items() if "lora_B" in k)
    clips = [v for k, v in trained.items() if "lora_act_clip" in k]
    assert len(clips) == 14 and all(torch.equal(c, torch.ones_like(c)) for c in clips)  # not asked to learn them
    with pytest.raises(UserError, match="svdquant base"):
        export_merged(run, tmp_path / "merged")


def test_bad_config_is_named(tiny_llm, world_pairs, tmp_path):
    with pytest.raises(UserError, match="not a `svdtune data pairs` output folder"):
        train_rewriter(config(tiny_llm, [tmp_path], tmp_path / "x", "steps=1"))
    with pytest.raises(UserError, match="matches no Linear layer"):
        train_rewriter(config(tiny_llm, world_pairs, tmp_path / "y", "steps=1", "lora.target=nothing_here$"))
    with pytest.raises(UserError, match="not a train-rewriter run"):
        load_tuned(tmp_path / "nowhere")


def test_nf4_base_is_qlora(tiny_llm, world_pairs, tmp_path):
    import bitsandbytes as bnb

    run = train_rewriter(config(tiny_llm, world_pairs, tmp_path / "nf4", "steps=1", "base_quant=nf4"))
    model, _ = load_tuned(run)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert sum("lora_A" in n for n, _ in model.named_parameters()) == 14


def test_answer_loss_equals_the_full_model_loss(tiny_llm, world_pairs):
    """The LM head on the answer positions only gives transformers' own loss, right-padded and all."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from svdtune.train.rewriter import answer_loss, collate, encode_pairs, load_pairs

    model, tok = AutoModelForCausalLM.from_pretrained(tiny_llm).eval(), AutoTokenizer.from_pretrained(tiny_llm)
    chats, _ = encode_pairs(load_pairs([str(p) for p in world_pairs], "train").select(range(6)), tok, 512)
    with torch.no_grad():
        ours = answer_loss(model, collate(chats, tok.pad_token_id))
        answers = [sum(label != -100 for label in c["labels"]) for c in chats]  # one row at a time, unpadded
        total = sum(model(input_ids=torch.tensor([c["input_ids"]]), labels=torch.tensor([c["labels"]])).loss * n
                    for c, n in zip(chats, answers))
    assert relative_error(ours, total / sum(answers)) < 1e-5
