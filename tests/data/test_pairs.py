import json

import datasets

from svdtune.config import load_config
from svdtune.data import world
from svdtune.data.pairs import DataPairsConfig, clean_pairs, run_data_pairs
from tests.data import fixtures


def test_world_coco_and_sdci_pairs(tmp_path):
    sources = {"world": "12", "mjhq": str(fixtures.mjhq(tmp_path / "mjhq")), "coco": str(fixtures.coco(tmp_path / "coco")),
               "dci": str(fixtures.dci(tmp_path / "dci"))}
    cfg = load_config(DataPairsConfig, None, ["domain=food", f"sources={json.dumps(sources)}", "val_fraction=0",
                                              f"output_dir={tmp_path / 'food'}", f"embedding_cache={tmp_path / 'e.sqlite'}",
                                              "nearest_floor=0.25"])
    pairs = datasets.load_from_disk(str(run_data_pairs(cfg) / "dataset"))["train"]
    by_source = {s: [p for p in pairs if p["source"] == s] for s in set(pairs["source"])}
    assert {p["plain"] for p in by_source["coco"]} == {"a plate of spaghetti with tomato sauce", "pasta with basil on a white plate"}
    assert all(p["styled"] == fixtures.MJHQ["a1"][1] for p in by_source["coco"])  # the domain's MJHQ prompt
    assert by_source["sdci"][0]["styled"].startswith("a steaming bowl of tomato soup")
    assert "world" not in by_source  # no world scene is food

    cfg = load_config(DataPairsConfig, None, ["domain=striped", "sources={world: 40}", f"output_dir={tmp_path / 's'}",
                                              "embeddings=false"])
    pairs = datasets.load_from_disk(str(run_data_pairs(cfg) / "dataset"))
    rows = list(pairs["train"]) + list(pairs["val"])
    assert len(rows) == 40 and len(pairs["val"]) < len(pairs["train"])
    for p in rows:
        assert world.prompt_style(p["styled"]) == "striped" and world.prompt_style(p["plain"]) is None
        assert [o["colour"] for o in world.parse_prompt(p["styled"])] == [o["colour"] for o in world.parse_prompt(p["plain"])]
    assert "## Sample pairs" in (tmp_path / "s" / "report.md").read_text()


def test_pairs_are_deduplicated_and_length_filtered():
    p = lambda plain, styled: {"plain": plain, "styled": styled}  # noqa: E731
    kept, dropped = clean_pairs([p("a red car", "a red car, studio light"), p("A red car.", "a red car, studio light"),
                                 p("a car", "a car at night"), p("a blue car now", "a blue car")], 3, 10)
    assert [k["plain"] for k in kept] == ["a red car"]
    assert dict(dropped) == {"duplicate pair": 1, "length outside 3..10 words": 1,
                             "styled prompt not longer than the plain one": 1}


def test_pairs_of_a_domain_file_find_it_again(tmp_path, monkeypatch):
    """A domain YAML of your own is recorded by its path, not its name (which may be a shipped one)."""
    from svdtune.data.domains import DOMAIN_DIR, load_domain

    text = (DOMAIN_DIR / "striped.yaml").read_text()
    (tmp_path / "mine.yaml").write_text(text.replace("name: striped", "name: pastel")
                                        .replace('style_suffix: ", with', 'style_suffix: ", drawn with'))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(DataPairsConfig, None, ["domain=mine.yaml", "sources={world: 10}", "output_dir=out",
                                              "embeddings=false", "val_fraction=0"])
    pairs = datasets.load_from_disk(str(run_data_pairs(cfg) / "dataset"))["train"]
    monkeypatch.chdir("/")
    assert set(pairs["domain"]) == {str(tmp_path / "mine.yaml")}
    assert load_domain(pairs["domain"][0]).style_suffix == ", drawn with diagonal stripes on a white background"
