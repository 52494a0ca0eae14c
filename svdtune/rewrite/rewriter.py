"""The prompt rewriter at inference: plain prompts in, prompts in a domain's style out, batched.

    rewriter = Rewriter.load("runs/rewriter/world")              # a `train-rewriter` run
    [r.text for r in rewriter.rewrite(["a red circle"], "pastel")]
    # ['a large red circle at the top left, in soft pastel colours on a cream background']

The model is loaded once (the adapter merged into the base unless the base is 4-bit) and decodes
with its KV cache; on the CPU one sequence decodes through int8 copies of the weights
(`kernels/cpu/int8_weights.py`), and a single prompt starts from the cached keys and
values of its domain's instruction, which every request shares. A long-lived process can also
compile the decoding of single greedy prompts (`decoding.compile`: transformers' static cache +
torch.compile).

Guardrails: a rewrite that drops a content word of the prompt is retried once with beam search,
then replaced by the prompt plus the domain's style suffix, and the `Rewrite` says which happened.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
from pathlib import Path
from typing import Literal

import torch

from svdtune.data.domains import Domain, load_domain
from svdtune.errors import UserError
from svdtune.kernels.cpu.int8_weights import int8_weights_
from svdtune.rewrite.chat import render
from svdtune.rewrite.terms import clean_output, missing_words, sanitize

log = logging.getLogger("svdtune")


@dataclasses.dataclass
class DecodingConfig:
    strategy: Literal["greedy", "beam", "sample"] = "greedy"
    num_beams: int = 4                # beam search, and the stricter retry
    temperature: float = 0.7          # sampling
    top_p: float = 0.9
    max_new_tokens: int = 64
    max_prompt_tokens: int = 96       # longer user prompts are cut to this many tokens, with a warning
    prompt_lookup: int = 0            # tokens drafted from the input per step (single greedy prompts; same
                                      # output): slower than int8 decoding here, whose drafts verify in 16-bit
    compile: bool = False             # single greedy prompts: static KV cache + compiled decode step instead of
                                      # prompt lookup; the first call compiles (about 30 s): for long-lived processes
    int8_weights: bool = True         # CPU, 16-bit base: one-sequence decoding through int8 copies of the weights
    batch_size: int = 32
    seed: int = 0

    def validate(self) -> None:
        for key in ("num_beams", "max_new_tokens", "max_prompt_tokens", "batch_size"):
            if getattr(self, key) <= 0:
                raise ValueError(f"decoding.{key} must be positive, got {getattr(self, key)}")
        if self.strategy == "sample" and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ValueError("decoding.temperature must be > 0 and decoding.top_p in (0, 1] for sampling")


@dataclasses.dataclass
class Rewrite:
    prompt: str                       # the user's prompt as used (cleaned, maybe truncated)
    text: str                         # what to give the image model
    source: Literal["model", "retry", "fallback"]
    model_output: str                 # the model's first answer, cleaned (before any guardrail)
    missing: list[str]                # content words the model's first answer dropped
    notes: list[str]                  # what was changed or fell back, for the user


class Rewriter:
    def __init__(self, model, tokenizer, decoding: DecodingConfig | None = None):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.decoding = decoding or DecodingConfig()
        self.decoding.validate()
        tokenizer.padding_side = "left"
        # A 4-bit base keeps its LoRA beside it (peft_config): what was trained is what runs
        if self.decoding.int8_weights and model.device.type == "cpu" and not hasattr(model, "peft_config"):
            int8_weights_(model)
        self._static_cache = None
        self._instruction_caches = {}
        # transformers 5 renamed `past_key_values` to `cache` (the old name warns)
        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @classmethod
    def load(cls, path: str = "smollm2", decoding: DecodingConfig | None = None, dtype: str = "bfloat16",
             device: str = "cpu") -> "Rewriter":
        """A `train-rewriter` run folder (its base + adapter), or any causal LM (untuned: the
        instruction alone)."""
        from svdtune.train.rewriter import load_tuned

        if (Path(path) / "adapter").is_dir():
            model, tokenizer = load_tuned(path, dtype, device)
        else:
            from svdtune.llm import load_causal_lm

            model, tokenizer = load_causal_lm(path, dtype, device)
        return cls(model, tokenizer, decoding)

    # ------------------------------------------------------------ inputs

    def prepare(self, prompt: str | bytes, index: int = 0) -> tuple[str, list[str]]:
        text, notes = sanitize(prompt)
        if not text:
            raise UserError(f"prompt {index} is empty" + (" after removing control characters" if notes else ""))
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        limit = self.decoding.max_prompt_tokens
        if len(ids) > limit:
            text = self.tokenizer.decode(ids[:limit]).strip()
            notes.append(f"the prompt was cut from {len(ids)} to {limit} tokens (decoding.max_prompt_tokens)")
        for note in notes:
            log.warning("prompt %d: %s", index, note)
        return text, notes

    # ------------------------------------------------------------ decoding

    def generation_kwargs(self, strategy: str, batch: int, prompt_tokens: int) -> dict:
        d = self.decoding
        kwargs = dict(max_new_tokens=d.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
        if strategy == "sample":
            return kwargs | dict(do_sample=True, temperature=d.temperature, top_p=d.top_p)
        kwargs["do_sample"] = False
        if strategy == "beam":
            return kwargs | dict(num_beams=d.num_beams, early_stopping=True)
        if batch == 1 and d.compile:
            return kwargs | self.compiled_decoding(prompt_tokens + d.max_new_tokens)
        if batch == 1 and d.prompt_lookup:
            kwargs["prompt_lookup_num_tokens"] = d.prompt_lookup
        return kwargs

    def compiled_decoding(self, tokens: int) -> dict:
        """transformers' compiled generation: one static cache, reused while it is long enough (its
        length is part of the compiled graph; prompts of any length up to it share one graph)."""
        from transformers import CompileConfig, StaticCache

        cache = self._static_cache
        if cache is None or cache.get_max_length() < tokens:
            cache = self._static_cache = StaticCache(config=self.model.config, max_cache_len=-(-tokens // 128) * 128)
        cache.reset()
        config = CompileConfig(dynamic=False, mode="default")
        config._compile_all_devices = True  # transformers compiles on GPUs only unless told (CPU: mode "default")
        return {self._cache_kwarg: cache, "compile_config": config}

    def instruction_cache(self, domain: Domain, input_ids: torch.Tensor):
        """The KV cache of the domain's instruction (the conversation up to the user's prompt, which
        every request shares: about three quarters of its tokens; computed once, to be copied, not
        extended), or None when the prompt's tokens do not start with it."""
        from transformers import DynamicCache

        marker = "\x00"  # a character `sanitize` removes from prompts
        rendered = render(self.tokenizer, domain, marker)
        prefix = rendered[:rendered.index(marker)]
        if prefix not in self._instruction_caches:
            ids = self.tokenizer(prefix, return_tensors="pt", add_special_tokens=False).input_ids.to(self.model.device)
            cache = DynamicCache(config=self.model.config)
            self.model(input_ids=ids, use_cache=True, **{self._cache_kwarg: cache})
            self._instruction_caches[prefix] = (ids[0], cache)
        ids, cache = self._instruction_caches[prefix]
        if input_ids.shape[1] <= len(ids) or not torch.equal(input_ids[0, :len(ids)], ids):
            return None
        return cache

    def start_from_instruction(self, kwargs: dict, domain: Domain, input_ids: torch.Tensor) -> None:
        """One prompt prefills only its own tokens: its domain's instruction cache is copied into the
        static cache of compiled decoding (in place: the compiled graph's addresses stay) or is
        given to `generate` as a fresh copy."""
        instruction = self.instruction_cache(domain, input_ids)
        if instruction is None:
            return
        static = kwargs.get(self._cache_kwarg)
        if static is None:
            kwargs[self._cache_kwarg] = copy.deepcopy(instruction)
        else:
            for i, layer in enumerate(instruction.layers):
                static.update(layer.keys, layer.values, i)

    @torch.no_grad()
    def generate(self, prompts: list[str], domain: Domain | list[Domain], strategy: str) -> list[str]:
        """Cleaned answers for already-prepared prompts (one domain, or one per prompt), in batches."""
        domains = domain if isinstance(domain, list) else [domain] * len(prompts)
        out = []
        for start in range(0, len(prompts), self.decoding.batch_size):
            chunk = prompts[start:start + self.decoding.batch_size]
            texts = [render(self.tokenizer, d, p) for d, p in zip(domains[start:start + len(chunk)], chunk)]
            inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
            torch.manual_seed(self.decoding.seed + start)
            kwargs = self.generation_kwargs(strategy, len(chunk), inputs.input_ids.shape[1])
            if len(chunk) == 1 and strategy != "beam" and "prompt_lookup_num_tokens" not in kwargs:
                self.start_from_instruction(kwargs, domains[start], inputs.input_ids)
            ids = self.model.generate(**inputs, **kwargs)
            answers = self.tokenizer.batch_decode(ids[:, inputs.input_ids.shape[1]:], skip_special_tokens=True)
            out += [clean_output(a) for a in answers]
        return out

    def rewrite(self, prompts: list[str | bytes], domain: str | Domain) -> list[Rewrite]:
        domain = domain if isinstance(domain, Domain) else load_domain(domain)
        prepared = [self.prepare(p, i) for i, p in enumerate(prompts)]
        texts = [t for t, _ in prepared]
        first = self.generate(texts, domain, self.decoding.strategy)
        results = [Rewrite(t, a, "model", a, missing_words(t, a), list(n)) for (t, n), a in zip(prepared, first)]
        failed = [r for r in results if r.missing or not r.text]
        if failed:  # one stricter try: beam search, which keeps to the likeliest (copying) answer
            for r, again in zip(failed, self.generate([r.prompt for r in failed], domain, "beam")):
                first_fault = f"dropped {', '.join(r.missing)}" if r.missing else "was empty"
                if again and not missing_words(r.prompt, again):
                    r.text, r.source = again, "retry"
                    r.notes.append(f"the first rewrite {first_fault}; beam search kept every word")
                else:
                    fault = f"dropped {', '.join(missing_words(r.prompt, again))}" if again else "was empty"
                    r.text, r.source = r.prompt + domain.style_suffix, "fallback"
                    r.notes.append(f"the first rewrite {first_fault} and the beam-search retry {fault}; using "
                                   "the prompt with the domain's style suffix")
                log.warning("prompt %r: %s", r.prompt, r.notes[-1])
        return results
