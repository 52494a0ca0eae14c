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
])
def test_bad_input_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(Outer, None, override)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(Outer, tmp_path / "nope.yaml")
