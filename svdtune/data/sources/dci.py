"""DCI / sDCI: one JSON per image (`short_caption`, `extra_caption`, `image`, `mask_data`, and for
sDCI the LLM-written `summaries`) plus the photo folder.

`path` is the DCI root (JSON files under `complete/` or `annotations/`, photos under `photos/`) or
a folder of the JSON files. One record per image: the short caption; as long caption the first
sDCI summary when present (source "sdci"), else the short and extra captions (source "dci");
labels from the masks whose quality is usable (mask_quality 0 or 1).
"""

from __future__ import annotations

from pathlib import Path

import datasets

from svdtune.data.records import BadFile, Columns, SkipLog, clean_caption, read_json


def json_files(path: Path) -> tuple[list[Path], Path]:
    """The per-image JSON files and the photo folder."""
    if not path.is_dir():
        raise BadFile(f"DCI folder {str(path)!r} does not exist" if not path.exists()
                      else f"{str(path)!r} is a file; expected the DCI folder (complete/ and photos/)")
    folder = next((path / d for d in ("complete", "annotations") if (path / d).is_dir()), path)
    files = sorted(folder.glob("*.json"))
    if not files:
        raise BadFile(f"no DCI JSON files in {str(folder)!r}")
    photos = path / "photos" if (path / "photos").is_dir() else path.parent / "photos"
    return files, photos


def read_dci(path: str | Path, skips: SkipLog) -> datasets.Dataset:
    files, photos = json_files(Path(path))
    out = Columns()
    for file in files:
        try:
            entry = read_json(file, "a DCI entry")
        except BadFile as e:  # one broken file is one bad record, not a broken dataset
            skips.skip("malformed JSON", f"{file} ({e})")
            continue
        if not isinstance(entry, dict):
            skips.skip("entry is not an object", str(file))
            continue
        short, why = clean_caption(entry.get("short_caption"))
        if why:
            skips.skip(why, str(file))
            continue
        if not isinstance(entry.get("image"), str):
            skips.skip("entry without an image file name", str(file))
            continue
        summary = _first_summary(entry.get("summaries"))
        extra, _ = clean_caption(entry.get("extra_caption"))
        long = summary or " ".join(filter(None, (short, extra)))
        out.add(f"dci:{file.stem}", "sdci" if summary else "dci", short, str(photos / entry["image"]),
                long_caption=long, labels=_mask_labels(entry.get("mask_data")))
    return out.dataset()


def _first_summary(summaries) -> str:
    """sDCI summaries come as a string, a list, or a dict of them (keyed by mask or "base")."""
    if isinstance(summaries, dict):
        summaries = summaries.get("base", next(iter(summaries.values()), None))
    if isinstance(summaries, list):
        summaries = summaries[0] if summaries else None
    text, _ = clean_caption(summaries)
    return text


def _mask_labels(mask_data) -> list[str]:
    if not isinstance(mask_data, dict):
        return []
    labels = []
    for mask in mask_data.values():
        if isinstance(mask, dict) and mask.get("mask_quality", 0) != 2:  # 2 = unusable
            label, _ = clean_caption(mask.get("label"))
            if label and label not in labels:
                labels.append(label)
    return labels
