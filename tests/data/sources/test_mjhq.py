import pytest

from svdtune.data.records import BadFile, SkipLog
from svdtune.data.sources.mjhq import read_mjhq
from tests.data import fixtures


def test_reads_prompts_categories_and_image_paths(tmp_path):
    ds = read_mjhq(fixtures.mjhq(tmp_path), SkipLog())
    assert sorted(ds["id"]) == ["mjhq:a1", "mjhq:a2", "mjhq:a3"]
    row = ds.filter(lambda r: r["id"] == "mjhq:a1")[0]
    assert row["category"] == "food" and row["short_caption"].startswith("a bowl of ramen")
    assert row["image"] == str(tmp_path / "food" / "a1.jpg")


def test_bad_entries_are_skipped_and_counted(tmp_path):
    skips = SkipLog()
    ds = read_mjhq(fixtures.mjhq(tmp_path, corrupt=True), skips)
    assert len(ds) == 3
    assert dict(skips.counts) == {"empty caption": 1, "entry is not an object": 1, "unknown MJHQ category": 1,
                                  "missing caption": 1}


def test_a_meta_file_of_the_wrong_shape_stops(tmp_path):
    (tmp_path / "meta_data.json").write_text("[1, 2, 3]")
    with pytest.raises(BadFile, match="meta_data.json: expected a JSON object mapping image ids"):
        read_mjhq(tmp_path, SkipLog())
    with pytest.raises(BadFile, match="does not exist"):
        read_mjhq(tmp_path / "nowhere", SkipLog())
