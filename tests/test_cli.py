import json
import os
import subprocess
import sys

import pytest

from svdtune.cli import main


def _cli(*args, cwd=None):
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "svdtune.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


@pytest.mark.parametrize("args, message", [
    (["generate", "stepz=3"], "unknown key 'stepz'; allowed keys: backend, batch_size"),
    (["generate", "--prompt", "a red circle", "model=/no/such/dir"], "model directory '/no/such/dir' does not exist"),
    (["generate", "--prompt", "a red circle", "steps=0"], "steps must be a positive integer, got 0"),
    (["generate", "steps=-2"], "steps must be a positive integer, got -2"),
    (["quickstart", "suites=[nine]"], "'nine' is not a prompt suite"),
    (["quickstart", "--config", "missing.yaml"], "config file 'missing.yaml' does not exist"),
    (["generate", "a red circle"], "pass prompts with --prompt"),
])
def test_bad_input_is_one_clear_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_generate_warns_on_unknown_words_and_still_writes_images(tmp_path, tiny_family):
    model = tiny_family[1] / "ref-unet"
    r = _cli("generate", "--prompt", "a red dragon at the top left", "--prompt", "a blue square",
             f"model={model}", "steps=2", f"output_dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert "does not know: dragon" in r.stderr and "Traceback" not in r.stderr
    records = json.loads((tmp_path / "images.json").read_text())
    assert [rec["prompt"] for rec in records] == ["a red dragon at the top left", "a blue square"]
    assert all((tmp_path / rec["file"]).is_file() for rec in records)
    assert "steps: 2" in (tmp_path / "config.yaml").read_text()


def test_info_lists_the_reference_models():
    r = _cli("info")
    assert r.returncode == 0 and "ref-unet" in r.stdout and "ref-dit" in r.stdout
