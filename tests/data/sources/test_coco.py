import pytest

from svdtune.data.records import BadFile, SkipLog
from svdtune.data.sources.coco import read_coco
from tests.data import fixtures


def test_reads_every_caption_of_every_file(tmp_path):
    skips = SkipLog()
    ds = read_coco(fixtures.coco(tmp_path), skips)
    assert len(ds) == sum(map(len, fixtures.COCO_CAPTIONS.values())) + 1  # + the train2017 file
    assert skips.total() == 0
    row = ds.filter(lambda r: r["id"] == "coco:2:103")[0]
    assert row["short_caption"] == "a dog running on the beach" and row["source"] == "coco"
    assert row["image"] == str(tmp_path / "val2014" / "COCO_val2014_000000000002.jpg")
    assert row["long_caption"] == "" and row["labels"] == []
    assert any(i.endswith("train2017/000000000005.jpg") for i in ds["image"])


def test_the_annotation_file_alone_is_a_valid_path(tmp_path):
    ds = read_coco(fixtures.coco(tmp_path) / "annotations" / "captions_val2014.json", SkipLog())
    assert len(ds) == 5 and all("/val2014/" in i for i in ds["image"])


def test_bad_records_are_skipped_and_counted_by_reason(tmp_path):
    skips = SkipLog()
    ds = read_coco(fixtures.coco(tmp_path, corrupt=True), skips)
    assert len(ds) == 6
    assert dict(skips.counts) == {"empty caption": 1, "caption is not text (int)": 1, "annotation without image_id": 1,
                                  "caption of an unknown image_id": 1, "caption has non-UTF-8 bytes": 1}


def test_structural_damage_stops_with_the_file_named(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "captions_val2017.json").write_text('{"images": [], "annotations": [')
    with pytest.raises(BadFile, match=r"captions_val2017.json: not valid JSON .*line 1"):
        read_coco(tmp_path, SkipLog())
    (ann / "captions_val2017.json").write_text('{"images": {}, "annotations": []}')
    with pytest.raises(BadFile, match="captions_val2017.json: expected a JSON object with lists 'images' and 'annotations'"):
        read_coco(tmp_path, SkipLog())
    with pytest.raises(BadFile, match="does not exist"):
        read_coco(tmp_path / "missing", SkipLog())
    (ann / "captions_val2017.json").unlink()
    with pytest.raises(BadFile, match=r"no captions_\{train,val\}"):
        read_coco(tmp_path, SkipLog())
