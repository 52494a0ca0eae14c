import pytest

from svdtune.data.records import BadFile, SkipLog
from svdtune.data.sources.dci import read_dci
from tests.data import fixtures


def test_reads_short_captions_summaries_and_mask_labels(tmp_path):
    ds = read_dci(fixtures.dci(tmp_path), SkipLog())
    rows = {r["id"]: r for r in ds}
    dog, soup = rows["dci:sa_1"], rows["dci:sa_2"]
    assert dog["source"] == "dci" and dog["long_caption"] == "a dog on a porch The porch is wooden."
    assert dog["labels"] == ["dog"]  # the unusable (quality 2) mask is left out
    assert soup["source"] == "sdci" and soup["long_caption"].startswith("a steaming bowl of tomato soup")
    assert soup["image"] == str(tmp_path / "photos" / "sa_2.jpg")


def test_a_broken_file_is_one_skipped_record(tmp_path):
    skips = SkipLog()
    ds = read_dci(fixtures.dci(tmp_path, corrupt=True), skips)
    assert len(ds) == 2
    assert dict(skips.counts) == {"malformed JSON": 1, "missing caption": 1, "entry without an image file name": 1,
                                  "entry is not an object": 1}


def test_a_folder_without_entries_stops(tmp_path):
    with pytest.raises(BadFile, match="no DCI JSON files"):
        read_dci(tmp_path, SkipLog())
    with pytest.raises(BadFile, match="does not exist"):
        read_dci(tmp_path / "nope", SkipLog())
