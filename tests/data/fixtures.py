"""Small datasets written to the published schemas (COCO Captions, MJHQ-30K, DCI/sDCI, generic
tables), each with a `corrupt` variant holding one of every kind of bad record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

BAD_UTF8 = b"a caf\xe9 with a cake"  # Latin-1 bytes: not UTF-8


def jpeg(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return path


def truncated_jpeg(path: Path) -> Path:
    data = jpeg(path, 99).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_json_with_raw(path: Path, obj, raw: bytes | None = None) -> Path:
    """json.dumps, with the placeholder string "@RAW@" replaced by raw (possibly non-UTF-8) bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj).encode()
    if raw is not None:
        text = text.replace(b"@RAW@", raw)
    path.write_bytes(text)
    return path


COCO_CAPTIONS = {
    1: ["a plate of spaghetti with tomato sauce", "pasta with basil on a white plate"],
    2: ["a dog running on the beach", "a brown dog playing in the sand"],
    3: ["a red bus driving down a city street"],
}


def coco(root: Path, corrupt: bool = False) -> Path:
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "width": 16, "height": 16} for i in COCO_CAPTIONS]
    anns, n = [], 0
    for image_id, caps in COCO_CAPTIONS.items():
        for cap in caps:
            n += 1
            anns.append({"image_id": image_id, "id": 100 + n, "caption": cap})
            jpeg(root / "val2014" / f"COCO_val2014_{image_id:012d}.jpg", image_id)
    raw = None
    if corrupt:
        anns += [
            {"image_id": 1, "id": 900, "caption": "   "},          # empty
            {"image_id": 1, "id": 901, "caption": 42},             # not text
            {"id": 902, "caption": "no image id"},                 # no image_id
            {"image_id": 77, "id": 903, "caption": "unknown image"},
            {"image_id": 2, "id": 904, "caption": "@RAW@"},        # non-UTF-8 bytes
        ]
        raw = BAD_UTF8
    write_json_with_raw(root / "annotations" / "captions_val2014.json",
                        {"info": {}, "images": images, "annotations": anns}, raw)
    # a second year/split, read alongside
    write_json_with_raw(root / "annotations" / "captions_train2017.json",
                        {"images": [{"id": 5, "file_name": "000000000005.jpg"}],
                         "annotations": [{"image_id": 5, "id": 1, "caption": "a cat sleeping on a sofa"}]})
    return root


MJHQ = {
    "a1": ("food", "a bowl of ramen with a soft boiled egg, studio lighting, 8k"),
    "a2": ("animals", "a majestic lion in the savanna at golden hour, national geographic"),
    "a3": ("landscape", "misty mountains above a lake at dawn, ultra detailed"),
}


def mjhq(root: Path, corrupt: bool = False) -> Path:
    meta = {k: {"category": c, "prompt": p} for k, (c, p) in MJHQ.items()}
    for k, (c, _) in MJHQ.items():
        jpeg(root / c / f"{k}.jpg")
    if corrupt:
        meta |= {"b1": {"category": "food", "prompt": ""}, "b2": "not an object",
                 "b3": {"category": "spaceships", "prompt": "a rocket"}, "b4": {"category": "food"}}
    write_json_with_raw(root / "meta_data.json", meta)
    return root


def dci(root: Path, corrupt: bool = False) -> Path:
    masks = {"0": {"label": "dog", "caption": "a brown dog", "mask_quality": 0, "bounds": {}, "parent": -1, "requirements": []},
             "1": {"label": "blurry thing", "caption": "", "mask_quality": 2, "bounds": {}, "parent": 0, "requirements": []}}
    entries = {
        "sa_1": {"short_caption": "a dog on a porch", "extra_caption": "The porch is wooden.", "image": "sa_1.jpg",
                 "mask_data": masks, "mask_keys": ["0", "1"]},
        "sa_2": {"short_caption": "a bowl of soup", "extra_caption": "Steam rises.", "image": "sa_2.jpg", "mask_data": {},
                 "mask_keys": [], "summaries": {"base": ["a steaming bowl of tomato soup on a rustic wooden table, warm light"]}},
    }
    for k, e in entries.items():
        write_json_with_raw(root / "complete" / f"{k}.json", e)
        jpeg(root / "photos" / e["image"])
    if corrupt:
        (root / "complete" / "sa_3.json").write_text('{"short_caption": "broken')
        write_json_with_raw(root / "complete" / "sa_4.json", {"extra_caption": "no short caption", "image": "sa_4.jpg"})
        write_json_with_raw(root / "complete" / "sa_5.json", {"short_caption": "no image"})
        write_json_with_raw(root / "complete" / "sa_6.json", ["not", "an", "object"])
    return root


GENERIC_ROWS = [
    {"file_name": "img/0.jpg", "text": "a pizza on a wooden table", "detail": "a margherita pizza, food photography"},
    {"file_name": "img/1.jpg", "text": "a train at the station", "detail": ""},
    {"file_name": "img/2.jpg", "text": "a cat on a bed", "detail": "a tabby cat asleep on a white bed"},
]


def generic_folder(root: Path, corrupt: bool = False) -> Path:
    """An image folder with metadata.jsonl (the `datasets` imagefolder layout)."""
    lines = [json.dumps(r).encode() for r in GENERIC_ROWS]
    for i, _ in enumerate(GENERIC_ROWS):
        jpeg(root / "img" / f"{i}.jpg", i)
    if corrupt:
        lines += [b'{"file_name": "img/9.jpg", "text": ', json.dumps({"file_name": "x.jpg", "text": None}).encode(),
                  b"[1, 2]", b'{"file_name": "img/3.jpg", "text": "' + BAD_UTF8 + b'"}']
        truncated_jpeg(root / "img" / "4.jpg")
        (root / "img" / "5.jpg").write_text("not an image")
        lines += [json.dumps({"file_name": "img/4.jpg", "text": "a truncated photo of a dog"}).encode(),
                  json.dumps({"file_name": "img/5.jpg", "text": "a text file of a horse"}).encode(),
                  json.dumps({"file_name": "img/6.jpg", "text": "a missing photo of a cow"}).encode()]
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return root
