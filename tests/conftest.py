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
