import dataclasses
from typing import Literal

import pytest

from svdtune.config import ConfigError, load_config, save_config


@dataclasses.dataclass
class Inner:
    lr: float = 1e-3
    mode: Literal["zero", "loftq"] = "zero"


@dataclasses.dataclass
class Outer:
    name: str = "run"
    steps: int = 10
    tags: list[str] = dataclasses.field(default_factory=list)
    inner: Inner = dataclasses.field(default_factory=Inner)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\ninner: {lr: 0.5}\n")
    cfg = load_config(Outer, path, ["inner.mode=loftq", "tags=[a, b]"])
    assert cfg == Outer(steps=5, tags=["a", "b"], inner=Inner(lr=0.5, mode="loftq"))


def test_resolved_config_round_trips(tmp_path):
    cfg = Outer(steps=3, inner=Inner(mode="loftq"))
    path = save_config(cfg, tmp_path)
    assert load_config(Outer, path) == cfg


@pytest.mark.parametrize("override, message", [
    (["inner.lrr=1"], "unknown key 'lrr'; allowed keys: lr, mode"),
    (["stepz=1"], "unknown key 'stepz'"),
    (["inner.mode=nf4"], "inner.mode: 'nf4' is not allowed; expected one of 'zero', 'loftq'"),
    (["steps=1.5"], "steps: expected an integer"),
    (["steps=many"], "steps: expected a number"),
    (["steps"], "expected dotted key=value"),
    (["inner.lr=fast"], "inner.lr: expected a number, got 'fast'"),
])
def test_bad_input_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(Outer, None, override)


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner: {lr: 5e-4}\n")  # YAML 1.1 (PyYAML) reads these as strings
    assert load_config(Outer, path).inner.lr == 5e-4
    assert load_config(Outer, None, ["inner.lr=1e-4"]).inner.lr == 1e-4


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_yaml_booleans_read_as_the_literal_they_spell():
    from svdtune.train.config import TrainConfig

    assert load_config(TrainConfig, None, ["mixed_precision=no"]).mixed_precision == "no"
    with pytest.raises(ValueError, match="mixed_precision: True is not allowed"):
        load_config(TrainConfig, None, ["mixed_precision=true"])


def test_a_partial_section_keeps_the_parents_default_for_the_rest():
    from svdtune.quickstart import QuickstartConfig

    cfg = load_config(QuickstartConfig, None, ["quant.calibration.steps=3"])
    # QuickstartConfig's default calibration has 32 prompts (QuantConfig's own default has 64)
    assert (cfg.quant.calibration.steps, cfg.quant.calibration.prompts, cfg.quant.calibration.batch_size) == (3, 32, 32)


def test_train_config_names_a_bad_activation_clip_setting():
    from svdtune.train.config import TrainConfig

    with pytest.raises(ValueError, match=r"lora.act_clip_init must be in \(0, 1\] .* got 1.5 and 0.0"):
        load_config(TrainConfig, None, ["lora.act_clip_init=1.5"])
