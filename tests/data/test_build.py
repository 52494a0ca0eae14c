import json

import datasets

from svdtune.cli import main
from svdtune.config import load_config
from svdtune.data.build import DataBuildConfig, run_data_build
from tests.data import fixtures


def _sources(tmp_path) -> str:
    return json.dumps({"coco": str(fixtures.coco(tmp_path / "coco", corrupt=True)),
                       "mjhq": str(fixtures.mjhq(tmp_path / "mjhq", corrupt=True)),
                       "dci": str(fixtures.dci(tmp_path / "dci", corrupt=True)),
                       "generic": str(fixtures.generic_folder(tmp_path / "generic", corrupt=True)),
                       "world": "20"})


def test_build_filters_every_source_to_the_domain_and_reports_why(tmp_path):
    cfg = load_config(DataBuildConfig, None, [
        "domain=food", f"sources={_sources(tmp_path)}", f"output_dir={tmp_path / 'out'}", "check_images=decode",
        "columns.caption=text", "columns.long_caption=detail", f"embedding_cache={tmp_path / 'e.sqlite'}",
        "val_fraction=0.3"])
    out = run_data_build(cfg)
    report = json.loads((out / "report.json").read_text())
    counts = report["counts"]
    subset = datasets.load_from_disk(str(out / "dataset"))
    kept = set(subset["train"]["id"]) | set(subset["val"]["id"])
    assert len(subset["val"]) > 0 and not set(subset["train"]["id"]) & set(subset["val"]["id"])
    # food records of every source, and nothing else
    assert {"coco:1:101", "coco:1:102", "mjhq:a1", "dci:sa_2", "generic:0"} <= kept
    assert not kept & {"coco:2:103", "coco:3:105", "mjhq:a2", "dci:sa_1", "generic:1", "generic:2"}
    assert not any(i.startswith("world:") for i in kept)
    # every bad record is counted under its reason, per source
    assert counts["coco"]["skipped: caption has non-UTF-8 bytes"] == 1 and counts["coco"]["read"] == 11
    assert counts["mjhq"]["skipped: unknown MJHQ category"] == 1 and counts["mjhq"]["other category"] == 2
    assert counts["dci"]["skipped: malformed JSON"] == 1
    assert counts["generic"]["skipped: image truncated or not an image"] == 2
    assert counts["generic"]["skipped: image file missing"] == 1
    assert counts["world"]["other category"] == 100  # a world style is a category: it decides
    assert sum(c["kept"] for c in counts.values()) == len(kept)
    text = (out / "report.md").read_text()
    assert "| coco | 11 |" in text and "skipped: malformed JSON line" in text and "## Sample captions" in text
    assert (out / "caption_lengths.png").stat().st_size > 1000 and (out / "config.yaml").is_file()
    # a second run embeds nothing: every caption comes from the cache
    cfg.output_dir = str(tmp_path / "again")
    again = json.loads((run_data_build(cfg) / "report.json").read_text())
    assert again["embedding_cache"]["misses"] == 0 and again["embedding_cache"]["hits"] > 0
    assert again["counts"] == counts


def test_cli_builds_a_world_style_subset(tmp_path, capsys):
    code = main(["data", "build", "--domain", "neon", "--sources", "world=10,world-b=5", "--out", str(tmp_path / "neon"),
                 "embeddings=false", "near_duplicate=0", "val_fraction=0"])
    assert code == 0 and "wrote" in capsys.readouterr().out
    subset = datasets.load_from_disk(str(tmp_path / "neon" / "dataset"))
    assert set(subset["train"]["category"]) == {"neon"} and len(subset["train"]) == 10  # world-b repeats world's scenes
    assert main(["data", "build", "--sources", "coco"]) == 2
    assert "is not name=path" in capsys.readouterr().err


def test_world_scenes_that_share_a_caption_are_all_kept(tmp_path):
    """Caption deduplication is for photos captioned twice; two world scenes with one caption are two images."""
    cfg = load_config(DataBuildConfig, None, [
        "domain=pastel", "sources={world: '300', world-b: '300'}", f"output_dir={tmp_path / 'out'}",
        f"embedding_cache={tmp_path / 'e.sqlite'}", "val_fraction=0"])
    out = run_data_build(cfg)
    train = datasets.load_from_disk(str(out / "dataset"))["train"]
    assert len(train) == 300  # world-b renders world's scenes again: those are the only duplicates
    assert len(set(train["long_caption"])) < len(train)  # captions repeat, scenes do not
    assert json.loads((out / "report.json").read_text())["counts"]["world-b"]["exact duplicate"] == 300


def test_a_capped_source_splits_like_the_others(tmp_path):
    """The cap keeps the lowest keep-hashes; the split must not be the same hash, or every survivor is val."""
    cfg = load_config(DataBuildConfig, None, [
        "domain=neon", "sources={world: '400'}", f"output_dir={tmp_path / 'out'}", "embeddings=false",
        "near_duplicate=0", "per_source_cap=100", "val_fraction=0.5"])
    subset = datasets.load_from_disk(str(run_data_build(cfg) / "dataset"))
    assert len(subset["train"]) + len(subset["val"]) == 100
    assert 30 <= len(subset["val"]) <= 70  # about half (binomial, 100 draws: 3 sigma is 15)
