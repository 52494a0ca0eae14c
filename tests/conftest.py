import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def reference_evaluator():
    from svdtune.pipelines import load_evaluator

    return load_evaluator()
