import json

import pytest

from svdtune.config import save_config
from svdtune.errors import UserError
from svdtune.eval.variants import parse, parse_all
from svdtune.pipelines import REFERENCE_DIR
from svdtune.train.config import TrainConfig
from tests.conftest import needs_shipped_weights


@pytest.fixture
def folders(tmp_path):
    """A quantize folder and a finished training run, as far as classifying them needs."""
    quant = tmp_path / "quant"
    quant.mkdir()
    (quant / "quant_manifest.json").write_text(json.dumps({"source": "ref-dit"}))
    run = tmp_path / "run"
    save_config(TrainConfig(model="ref-unet"), run)
    (run / "adapter").mkdir()
    return quant, run


@needs_shipped_weights
def test_specs_are_classified_with_their_16bit_source(folders):
    quant, run = folders
    v16 = parse("base=ref-unet")
    assert (v16.kind, v16.source) == ("16-bit", str(REFERENCE_DIR / "ref-unet"))
    q = parse(f"q={quant}")
    assert (q.kind, q.source) == ("W4A4", str(REFERENCE_DIR / "ref-dit"))
    adapted = parse(f"adapted = {run}")
    assert (adapted.label, adapted.kind, adapted.strength, adapted.source) == (
        "adapted", "W4A4 + adapter", 1.0, str(REFERENCE_DIR / "ref-unet"))
    off = parse(f"off={run}:0")  # the run's backbone, adapter off (export's RUN:STRENGTH)
    assert (off.kind, off.strength, off.path) == ("W4A4", 0.0, str(run))
    assert parse(f"half={run}:0.5").strength == 0.5


@pytest.mark.parametrize("item, message", [
    ("ref-unet", "'ref-unet' is not label=spec"),
    ("x=/no/such/model", "variant 'x': '/no/such/model' does not exist"),
    ("x=/no/such/run:0", "variant 'x': '/no/such/run' does not exist"),
    ("x=ref-unet:0.5", "'ref-unet' does not exist; RUN:STRENGTH needs a training run folder"),
])
def test_bad_variants_name_the_value(item, message):
    with pytest.raises(UserError, match=message):
        parse(item)


def test_bad_variants_next_to_real_folders(folders, tmp_path):
    quant, run = folders
    with pytest.raises(UserError, match="a strength applies to training runs only"):
        parse(f"q={quant}:0.5")
    with pytest.raises(UserError, match=f"variant 'r': '{run}:x': the adapter strength after ':' must be a number"):
        parse(f"r={run}:x")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match=f"variant 'p': '{tmp_path / 'plain'}' is none of"):
        parse(f"p={tmp_path / 'plain'}")
    with pytest.raises(UserError, match="the label 'a' is used twice"):
        parse_all([f"a={quant}", f"a={run}"])
