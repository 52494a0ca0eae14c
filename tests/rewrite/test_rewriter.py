"""The rewriter's plumbing on a tiny random Llama: chat encoding, decoding, guardrails, bad input."""

import logging

import pytest

from svdtune.cli import main
from svdtune.data.domains import load_domain
from svdtune.errors import UserError
from svdtune.rewrite.chat import IGNORE, encode_pair, render
from svdtune.rewrite.rewriter import DecodingConfig, Rewriter

PASTEL = load_domain("pastel")
STYLED = "a large red circle at the top left" + PASTEL.style_suffix


@pytest.fixture(scope="module")
def rewriter(tiny_llm):
    return Rewriter.load(str(tiny_llm), DecodingConfig(max_new_tokens=6), dtype="float32")


def test_labels_score_the_answer_only(rewriter):
    tok = rewriter.tokenizer
    chat = encode_pair(tok, PASTEL, "a red circle", STYLED)
    answer = [i for i, label in zip(chat["input_ids"], chat["labels"]) if label != IGNORE]
    assert tok.decode(answer).startswith(STYLED) and tok.decode(answer).rstrip().endswith("<|im_end|>")
    question = tok.decode(chat["input_ids"][:chat["labels"].count(IGNORE)])
    assert "pastel" in question and "a red circle" in question and STYLED not in question


class Scripted(Rewriter):
    """The model's answers replaced by a script (per strategy), to test what the guardrails do."""

    def __init__(self, base, answers):
        super().__init__(base.model, base.tokenizer, base.decoding)
        self.answers = answers

    def generate(self, prompts, domain, strategy):
        return [self.answers[strategy][p] for p in prompts]


def test_guardrails_retry_then_fall_back(rewriter, caplog):
    script = Scripted(rewriter, {
        "greedy": {"a red circle": STYLED, "a blue square": "a square" + PASTEL.style_suffix, "a green cross": ""},
        "beam": {"a blue square": "a small blue square" + PASTEL.style_suffix, "a green cross": "a cross"}})
    with caplog.at_level(logging.WARNING, "svdtune"):
        ok, retried, fallback = script.rewrite(["a red circle", "a blue square", "a green cross"], PASTEL)
    assert (ok.source, ok.text, ok.missing) == ("model", STYLED, [])
    assert (retried.source, retried.missing) == ("retry", ["blue"])
    assert retried.text == "a small blue square" + PASTEL.style_suffix
    assert fallback.source == "fallback" and fallback.text == "a green cross" + PASTEL.style_suffix
    assert "green" in fallback.notes[-1] and "style suffix" in fallback.notes[-1]
    assert "the first rewrite dropped blue; beam search kept every word" in caplog.text
    assert "the beam-search retry dropped green" in fallback.notes[-1]


def test_real_decoding_never_crashes_on_odd_prompts(rewriter, caplog):
    long_prompt = "a red circle " * 800  # 10,400 characters
    with caplog.at_level(logging.WARNING, "svdtune"):
        results = rewriter.rewrite([long_prompt, b"a blue \xff square", "a green\x00 cross\x1b", "a red circle"], "pastel")
    assert all(r.text.strip() for r in results)  # a random model's output still ends in a usable prompt
    assert "cut from" in results[0].notes[0] and len(results[0].prompt) < 1000
    assert results[1].prompt == "a blue \ufffd square" and "control characters" in results[2].notes[0]
    assert "decoding.max_prompt_tokens" in caplog.text


@pytest.mark.parametrize("setting", [dict(prompt_lookup=10), dict(compile=True)])
def test_single_prompt_speedups_match_plain_greedy(rewriter, setting):
    fast = Rewriter(rewriter.model, rewriter.tokenizer, DecodingConfig(max_new_tokens=6, **setting))
    kwargs = fast.generation_kwargs("greedy", 1, 20)
    assert ("prompt_lookup_num_tokens" if "prompt_lookup" in setting else "compile_config") in kwargs
    assert fast.generation_kwargs("greedy", 2, 20).keys() == rewriter.generation_kwargs("greedy", 2, 20).keys()
    prompts = ["a red circle", "a blue square and a small green cross"]  # two lengths: one compiled graph
    assert [fast.generate([p], PASTEL, "greedy") for p in prompts] == [rewriter.generate([p], PASTEL, "greedy") for p in prompts]


@pytest.mark.parametrize("compile", [False, True])
def test_single_prompts_start_from_their_domains_cached_instruction(tiny_llm, compile):
    r = Rewriter.load(str(tiny_llm), DecodingConfig(max_new_tokens=8, int8_weights=False, compile=compile), dtype="float32")
    prompts = ["a red circle", "a blue square and a small green cross"]
    full = [r.tokenizer(render(r.tokenizer, PASTEL, p), add_special_tokens=False).input_ids for p in prompts]
    prefills = []  # calls with more than one new token (the compiled decode steps may not run hooks)
    r.model.register_forward_pre_hook(lambda module, args, kwargs: prefills.append(kwargs["input_ids"].shape[1])
                                      if kwargs["input_ids"].shape[1] > 1 else None, with_kwargs=True)
    cached = [r.generate([p], PASTEL, "greedy")[0] for p in prompts]
    instruction = prefills[0]  # the first call fills the domain's cache; each prompt then prefills only its own tokens
    assert prefills[1:] == [len(ids) - instruction for ids in full]
    r.instruction_cache = lambda *args: None  # the whole conversation prefilled instead
    assert [r.generate([p], PASTEL, "greedy")[0] for p in prompts] == cached


def test_bad_input_gets_a_message(rewriter, tiny_llm, capsys):
    with pytest.raises(UserError, match="prompt 1 is empty"):
        rewriter.rewrite(["a red circle", "  \x00 "], PASTEL)
    assert main(["rewrite", "a red circle", "--domain", "velvet", "--rewriter", str(tiny_llm)]) == 2
    assert "unknown domain 'velvet'; shipped domains:" in capsys.readouterr().err
    assert main(["rewrite", "", "--domain", "pastel", "--rewriter", str(tiny_llm)]) == 2
    assert "prompt 0 is empty" in capsys.readouterr().err
    assert main(["rewrite", "a red circle", "--rewriter", "/no/such/run"]) == 2
    assert "no rewriter at '/no/such/run'" in capsys.readouterr().err
    assert main(["rewrite", "--domain", "pastel"]) == 2
    assert "no prompt given" in capsys.readouterr().err


def test_cli_prints_one_rewrite_per_prompt(tiny_llm, tmp_path, capsys):
    args = ["rewrite", "a red circle", "--prompt", "a blue square", "--domain", "neon", "--rewriter", str(tiny_llm),
            "decoding.max_new_tokens=4", "dtype=float32", f"output_dir={tmp_path}"]
    assert main(args) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("svdtune rewrite: wrote")]
    assert len(lines) == 2
    assert len((tmp_path / "rewrites.jsonl").read_text().splitlines()) == 2 and (tmp_path / "config.yaml").is_file()
