import logging
import os
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("SVDTUNE_CACHE", tempfile.mkdtemp(prefix="svdtune-test-cache-"))  # embeddings, per run
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
# Without a GPU the Triton kernels run in Triton's interpreter. It has to be on before anything
# imports triton (torch.compile and bitsandbytes do), so it is set here, for the whole session.
if not __import__("torch").cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

from svdtune.pipelines import REFERENCE_DIR  # noqa: E402

SHIPPED = (REFERENCE_DIR / "ref-unet" / "model_index.json").is_file()
NOT_SHIPPED = f"reference weights not in {REFERENCE_DIR} (./launch.sh train-reference)"
needs_shipped_weights = pytest.mark.skipif(not SHIPPED, reason=NOT_SHIPPED)


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory):
    """The reference-family recipe run end to end for 2 steps per stage: (config, export dir)."""
    from svdtune.config import load_config
    from svdtune.train.reference.recipe import FamilyConfig, train_family

    root = tmp_path_factory.mktemp("family")
    tiny = ["n_scenes=8"] + [f"{s}.{k}={v}" for s in ("evaluator", "vae", "unet", "unet_refine", "dit")
                             for k, v in (("steps", 2), ("batch_size", 2), ("warmup", 1), ("save_every", 1))]
    cfg = load_config(FamilyConfig, "configs/reference/family.yaml",
                      [f"output_dir={root / 'run'}", f"export_dir={root / 'export'}", *tiny])
    return cfg, train_family(cfg)


@pytest.fixture(scope="session")
def reference_evaluator():
    from svdtune.pipelines import load_evaluator

    if not SHIPPED:
        pytest.skip(NOT_SHIPPED)
    return load_evaluator()


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory):
    """A 2-layer Llama with SmolLM2's tokenizer and chat template, saved as a transformers folder
    (random weights: fast, and enough to test the plumbing; quality is measured by benchmarks)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from svdtune.llm import smollm2_path

    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    folder = tmp_path_factory.mktemp("tiny-llm")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def world_pairs(tmp_path_factory):
    """`svdtune data pairs` folders for two world styles, built straight from world scenes."""
    import datasets

    from svdtune.data.build import save_dataset
    from svdtune.data.pairs import PAIR_FEATURES
    from svdtune.data.sources.world import world_scene

    folders = []
    for style in ("pastel", "neon"):
        rows = [dict(id=f"{style}-{i}", source="world", domain=style, plain=s.short_caption(),
                     styled=s.detailed_caption(), similarity=1.0)
                for i, s in enumerate(world_scene(style, 0, i) for i in range(24))]
        split = datasets.DatasetDict(train=datasets.Dataset.from_list(rows[:20], features=PAIR_FEATURES),
                                     val=datasets.Dataset.from_list(rows[20:], features=PAIR_FEATURES))
        folder = tmp_path_factory.mktemp(f"{style}-pairs")
        save_dataset(split, folder / "dataset")
        folders.append(folder)
    return folders
