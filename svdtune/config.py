"""Configs: dataclasses filled from YAML, with dotted `key=value` overrides and strict validation.

Every job has one dataclass config. `load_config(Cls, path, overrides)` reads the YAML, applies
overrides such as `train.lr=1e-4`, checks every key and value against the dataclass (an unknown key
names the allowed keys; a value outside a `Literal` names the allowed values), and returns the
instance. `save_config` writes the resolved config beside a run's outputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml


from svdtune.errors import UserError

# The repository's configs/ (launch.sh installs svdtune editable, so the package sits beside it).
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class ConfigError(UserError, ValueError):
    """A config file or override is wrong; the message says where and what was expected."""


def load_config(cls: type, path: str | os.PathLike | None = None, overrides: list[str] = ()) -> Any:
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected dotted key=value, for example train.lr=1e-4")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[leaf] = yaml.safe_load(raw) if raw != "" else ""
    where = str(path) if path is not None else "config"
    return from_dict(cls, data, where)


def from_dict(cls: type, data: dict, where: str = "config", defaults: Any = None) -> Any:
    """`cls` from a (partial) mapping; keys it leaves out keep `defaults`' values, else the
    field defaults. A nested section starts from its parent's default for it, so that
    `quant.rank=8` changes the rank of the parent's default QuantConfig and nothing else."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(fields))}")
    values = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where != "config" else name
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            values[name] = from_dict(hints[name], value, key, _default(fields[name], defaults))
        else:
            values[name] = _coerce(hints[name], value, key)
    if defaults is not None:
        values = {f: getattr(defaults, f) for f in fields} | values
    try:
        obj = cls(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    return obj


def _default(field: dataclasses.Field, defaults: Any) -> Any:
    if defaults is not None:
        return getattr(defaults, field.name)
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else None


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        if isinstance(value, bool):  # YAML 1.1 reads a bare no / off / yes / on as a boolean
            words = ("yes", "on", "true") if value else ("no", "off", "false")
            value = next((a for a in get_args(tp) if isinstance(a, str) and a in words), value)
        if value not in get_args(tp):
            allowed = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"{key}: {value!r} is not allowed; expected one of {allowed}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, key)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (arg, *_) = get_args(tp) or (Any,)
        items = [_coerce(arg, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads a float without a dot (1e-4) as a string
        except ValueError:
            pass
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if tp is int and float(value) != int(value):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return tp(value)
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def config_text(obj: Any) -> str:
    """The resolved config as the YAML `save_config` writes."""
    return yaml.safe_dump(_plain(to_dict(obj)), sort_keys=False)


def save_config(obj: Any, directory: str | os.PathLike, name: str = "config.yaml") -> Path:
    """Write the resolved config atomically as `directory/name` and return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(directory / name, config_text(obj))


def cache_dir() -> Path:
    """Where converted offline weights live (LPIPS, the default LLM): $SVDTUNE_CACHE or ~/.cache/svdtune."""
    return Path(os.environ.get("SVDTUNE_CACHE", Path.home() / ".cache" / "svdtune"))


def atomic_save_file(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """safetensors `save_file` under a temporary name, then renamed: a crash never leaves half a file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_beside(path)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    tmp = _temporary_beside(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def atomic_folder(directory: str | os.PathLike):
    """with atomic_folder(d) as tmp: write the folder's files into tmp (`<d>.tmp`, emptied first);
    when the block ends without an error, tmp replaces d whole (swap_in)."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    swap_in(tmp, directory)


def swap_in(tmp: Path, directory: Path) -> Path:
    """Replace `directory` by the finished folder `tmp`. The old copy is renamed to <directory>.old
    and deleted only once the new one is in place: a crash between the renames leaves a whole copy."""
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def _temporary_beside(path: Path) -> str:
    """A new file next to `path` (same file system: the rename is atomic) that no other writer
    shares, readable by others as a plain file would be (mkstemp makes it owner-only)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)
    return tmp


def folder_stamp(path: str | os.PathLike) -> str:
    """A hash of the names, sizes and times of the files under `path` (what changes when a model
    in it is retrained in place), or `path` itself when it names no folder (a hub id, a reference
    model's name)."""
    folder = Path(path)
    if not folder.is_dir():
        return str(path)
    h = hashlib.sha1()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def read_json(path: Path) -> Any:
    """A JSON file's content; a damaged one is reported by its path (json's message alone names none)."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
