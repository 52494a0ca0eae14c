"""COCO Captions 2014/2017: `annotations/captions_{train,val}{2014,2017}.json` and the image folders.

One record per caption (about five per image): id `coco:<image_id>:<caption_id>`, image
`<root>/<split><year>/<file_name>`. `path` is the COCO root, its annotations folder, or one
captions file.
"""

from __future__ import annotations

import re
from pathlib import Path

import datasets

from svdtune.data.records import BadFile, Columns, SkipLog, clean_caption, read_json

_CAPTIONS_FILE = re.compile(r"captions_(train|val)(\d{4})\.json$")


def caption_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    for folder in (path / "annotations", path):
        files = sorted(f for f in folder.glob("captions_*.json") if _CAPTIONS_FILE.search(f.name))
        if files:
            return files
    if not path.exists():
        raise BadFile(f"COCO folder {str(path)!r} does not exist")
    raise BadFile(f"no captions_{{train,val}}{{2014,2017}}.json under {str(path)!r} or its annotations/ folder")


def read_coco(path: str | Path, skips: SkipLog) -> datasets.Dataset:
    path = Path(path)
    out = Columns()
    for file in caption_files(path):
        _read_file(file, out, skips)
    return out.dataset()


def _read_file(file: Path, out: Columns, skips: SkipLog) -> None:
    data = read_json(file, "COCO captions (keys 'images' and 'annotations')")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise BadFile(f"{file}: expected a JSON object with lists 'images' and 'annotations' (COCO captions schema)")
    m = _CAPTIONS_FILE.search(file.name)
    root = file.parent.parent if file.parent.name == "annotations" else file.parent
    image_dir = root / f"{m.group(1)}{m.group(2)}" if m else root
    images = {}
    for image in data["images"]:
        if isinstance(image, dict) and "id" in image and isinstance(image.get("file_name"), str):
            images[image["id"]] = image["file_name"]
        else:
            skips.skip("image entry without id or file_name", f"{file} image {_id_of(image)}")
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or "image_id" not in ann:
            skips.skip("annotation without image_id", f"{file} annotation {_id_of(ann)}")
            continue
        name = images.get(ann["image_id"])
        if name is None:
            skips.skip("caption of an unknown image_id", f"{file} annotation {_id_of(ann)}")
            continue
        caption, why = clean_caption(ann.get("caption"))
        if why:
            skips.skip(why, f"{file} annotation {_id_of(ann)}")
            continue
        out.add(f"coco:{ann['image_id']}:{ann.get('id', len(out))}", "coco", caption, str(image_dir / name))


def _id_of(entry) -> str:
    return str(entry.get("id", "?")) if isinstance(entry, dict) else repr(entry)[:40]
