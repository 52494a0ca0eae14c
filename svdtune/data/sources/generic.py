"""Any caption table: JSONL, CSV or Parquet; an image folder with `metadata.jsonl`; a dataset saved
with `save_to_disk`; or a `datasets` hub id that is already in the local cache.

Column names are configurable (GenericColumns). JSONL is parsed line by line so that one broken
line is skipped and counted (with its line number) instead of failing the file; CSV and Parquet
go through `datasets`, whose parsers stop on structural damage, reported with the file name.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable, Iterator

import datasets

from svdtune.data.records import BadFile, Columns, SkipLog, clean_caption


@dataclasses.dataclass
class GenericColumns:
    caption: str = "caption"
    long_caption: str = ""       # "" = the source has no long captions
    image: str = "file_name"     # relative paths are taken relative to the table's folder
    id: str = ""                 # "" = the row number
    category: str = ""


def read_generic(path: str | Path, skips: SkipLog, columns: GenericColumns | None = None,
                 name: str = "generic") -> datasets.Dataset:
    columns = columns or GenericColumns()
    path = Path(path)
    out = Columns()
    rows, where, root = _rows(path, skips)
    checked = False
    for i, row in enumerate(rows):
        if not checked:  # the schema is checked once, on the first row
            _check_columns(row, columns, where)
            checked = True
        _add(row, i, columns, root, name, out, skips, where)
    if not checked:
        raise BadFile(f"{where}: no rows")
    return out.dataset()


def _rows(path: Path, skips: SkipLog) -> tuple[Iterable[dict], str, Path]:
    if path.is_dir() and (path / "metadata.jsonl").is_file():
        return _jsonl(path / "metadata.jsonl", skips), str(path / "metadata.jsonl"), path
    if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise BadFile(f"{path}: a DatasetDict without a 'train' split (it has {', '.join(ds) or 'none'})")
            ds = ds["train"]
        return _table_rows(ds), str(path), path
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".csv", ".parquet") and not path.is_file():
        raise BadFile(f"caption table {str(path)!r} does not exist")
    if suffix == ".json":
        return _json(path, skips), str(path), path.parent
    if suffix == ".jsonl":
        return _jsonl(path, skips), str(path), path.parent
    if suffix in (".csv", ".parquet"):
        try:
            ds = datasets.load_dataset(suffix[1:], data_files=str(path), split="train")
        except Exception as e:  # pyarrow's parse errors carry no file name
            raise BadFile(f"{path}: cannot parse as {suffix[1:].upper()} ({type(e).__name__}: {e})") from None
        return _table_rows(ds), str(path), path.parent
    if path.exists():
        raise BadFile(f"{str(path)!r}: expected a .jsonl/.csv/.parquet file, a folder with metadata.jsonl, "
                      "or a folder written by Dataset.save_to_disk")
    try:  # a hub id, served from the local datasets cache (HF_DATASETS_OFFLINE=1 here)
        ds = datasets.load_dataset(str(path), split="train")
    except Exception as e:
        raise BadFile(f"{str(path)!r} is neither a local path nor a dataset in the local cache ({type(e).__name__})") from None
    return _table_rows(ds), str(path), Path(".")


def _jsonl(path: Path, skips: SkipLog) -> Iterator[dict]:
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8", errors="surrogateescape"))
            except json.JSONDecodeError:
                skips.skip("malformed JSON line", f"{path} line {n}")
                continue
            if not isinstance(row, dict):
                skips.skip("line is not a JSON object", f"{path} line {n}")
                continue
            yield row


def _json(path: Path, skips: SkipLog) -> Iterator[dict]:
    """A .json file: one JSON array of objects, or JSON Lines under that suffix."""
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    if not text.lstrip().startswith("["):
        yield from _jsonl(path, skips)
        return
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadFile(f"{path}: not valid JSON ({e}); expected a JSON array of objects or JSON Lines") from None
    for n, row in enumerate(rows):
        if isinstance(row, dict):
            yield row
        else:
            skips.skip("array item is not a JSON object", f"{path} item {n}")


def _table_rows(ds: datasets.Dataset) -> Iterator[dict]:
    for batch in ds.iter(batch_size=10_000):
        keys = list(batch)
        yield from (dict(zip(keys, values)) for values in zip(*batch.values()))


def _check_columns(row: dict, columns: GenericColumns, where: str) -> None:
    """Every column the config names must exist, or it would be read as empty on every row. The
    default image column may be absent: a caption-only table (its records have no image)."""
    for field in dataclasses.fields(columns):
        name = getattr(columns, field.name)
        if name and name not in row and not (field.name == "image" and name == field.default):
            raise BadFile(f"{where}: no column {name!r} (the {field.name} column); columns are "
                          f"{sorted(row)} - set columns.{field.name}")


def _add(row: dict, i: int, columns: GenericColumns, root: Path, name: str, out: Columns,
         skips: SkipLog, where: str) -> None:
    rid = str(row.get(columns.id, i)) if columns.id else str(i)
    caption, why = clean_caption(row.get(columns.caption))
    if why:
        skips.skip(why, f"{where} record {rid}")
        return
    long, _ = clean_caption(row.get(columns.long_caption)) if columns.long_caption else ("", "")
    image = row.get(columns.image)
    image = str(root / image) if isinstance(image, str) and image else ""
    category = row.get(columns.category) if columns.category else ""
    out.add(f"{name}:{rid}", name, caption, image, long_caption=long,
            category=category if isinstance(category, str) else "")
