"""MJHQ-30K: `meta_data.json` (image id -> {"category", "prompt"}) and `<category>/<id>.jpg`.

One record per image: id `mjhq:<id>`, the prompt as its caption, the category as its category.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from svdtune.data.records import BadFile, Columns, SkipLog, clean_caption, read_json

CATEGORIES = ("animals", "art", "fashion", "food", "indoor", "landscape", "logo", "people", "plants", "vehicles")


def read_mjhq(path: str | Path, skips: SkipLog) -> datasets.Dataset:
    path = Path(path)
    meta_file = path if path.is_file() else path / "meta_data.json"
    meta = read_json(meta_file, "MJHQ-30K meta_data.json (image id -> {category, prompt})")
    if not isinstance(meta, dict):
        raise BadFile(f"{meta_file}: expected a JSON object mapping image ids to {{'category', 'prompt'}}")
    root = meta_file.parent
    out = Columns()
    for image_id, entry in meta.items():
        where = f"{meta_file} image {image_id}"
        if not isinstance(entry, dict):
            skips.skip("entry is not an object", where)
            continue
        category = entry.get("category")
        if category not in CATEGORIES:
            skips.skip("unknown MJHQ category", where)
            continue
        caption, why = clean_caption(entry.get("prompt"))
        if why:
            skips.skip(why, where)
            continue
        out.add(f"mjhq:{image_id}", "mjhq", caption, str(root / category / f"{image_id}.jpg"), category=category)
    return out.dataset()
