import json

import datasets
import pytest

from svdtune.data.records import BadFile, SkipLog
from svdtune.data.sources.generic import GenericColumns, read_generic
from tests.data import fixtures

COLUMNS = GenericColumns(caption="text", long_caption="detail")


def test_image_folder_with_metadata_jsonl(tmp_path):
    ds = read_generic(fixtures.generic_folder(tmp_path), SkipLog(), COLUMNS, name="generic-mine")
    assert ds["short_caption"] == [r["text"] for r in fixtures.GENERIC_ROWS]
    assert ds["long_caption"] == [r["detail"] for r in fixtures.GENERIC_ROWS]
    assert ds[0]["image"] == str(tmp_path / "img" / "0.jpg") and ds[0]["id"] == "generic-mine:0"


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_tables_give_the_same_records(tmp_path, suffix):
    table = datasets.Dataset.from_list(fixtures.GENERIC_ROWS)
    path = tmp_path / f"captions.{suffix}"
    {"csv": table.to_csv, "parquet": table.to_parquet, "jsonl": table.to_json}[suffix](str(path))
    ds = read_generic(path, SkipLog(), COLUMNS)
    assert ds["short_caption"] == [r["text"] for r in fixtures.GENERIC_ROWS]
    assert ds[2]["long_caption"] == "a tabby cat asleep on a white bed"


def test_a_saved_dataset_folder(tmp_path):
    datasets.Dataset.from_list(fixtures.GENERIC_ROWS).save_to_disk(str(tmp_path / "saved"))
    ds = read_generic(tmp_path / "saved", SkipLog(), COLUMNS)
    assert len(ds) == 3


def test_bad_lines_are_skipped_with_their_line_number(tmp_path, caplog):
    skips = SkipLog()
    ds = read_generic(fixtures.generic_folder(tmp_path, corrupt=True), skips, COLUMNS)
    assert len(ds) == 6  # 3 good + the three whose images are bad: images are checked later
    assert dict(skips.counts) == {"malformed JSON line": 1, "missing caption": 1, "line is not a JSON object": 1,
                                  "caption has non-UTF-8 bytes": 1}
    assert "metadata.jsonl line 4" in caplog.text


def test_a_missing_caption_column_names_the_columns_there_are(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"file_name": "a.jpg", "prompt": "x"}) + "\n")
    with pytest.raises(BadFile, match=r"no column 'caption' \(the caption column\); columns are \['file_name', 'prompt'\]"):
        read_generic(path, SkipLog())
    with pytest.raises(BadFile, match="does not exist"):
        read_generic(tmp_path / "missing.csv", SkipLog())
    with pytest.raises(BadFile, match="neither a local path nor a dataset in the local cache"):
        read_generic("no-such-user/no-such-dataset", SkipLog())


def test_a_json_array_and_json_lines_named_json_both_read(tmp_path):
    (tmp_path / "array.json").write_text(json.dumps(fixtures.GENERIC_ROWS, indent=2))
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in fixtures.GENERIC_ROWS))
    for name in ("array.json", "lines.json"):
        assert read_generic(tmp_path / name, SkipLog(), COLUMNS)["short_caption"] == [
            r["text"] for r in fixtures.GENERIC_ROWS]


def test_a_misnamed_optional_column_is_an_error_not_an_empty_column(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"text": "a dog", "detail": "a brown dog"}) + "\n")
    with pytest.raises(BadFile, match=r"no column 'details' \(the long_caption column\)"):
        read_generic(path, SkipLog(), GenericColumns(caption="text", long_caption="details"))
    assert len(read_generic(path, SkipLog(), COLUMNS)) == 1  # no file_name column: a caption-only table
    datasets.DatasetDict(test=datasets.Dataset.from_list(fixtures.GENERIC_ROWS)).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(BadFile, match="without a 'train' split \\(it has test\\)"):
        read_generic(tmp_path / "dd", SkipLog(), COLUMNS)
