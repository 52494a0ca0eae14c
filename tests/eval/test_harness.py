"""`svdtune eval` and `svdtune compare` end to end on the recipe-trained tiny family: a 16-bit model
and its W4A4 quantize folder, 2 prompts per set, 2 steps."""

import json

import pytest
from PIL import Image

from svdtune.cli import main
from svdtune.eval.report import render_report


@pytest.fixture(scope="module")
def quantized(tiny_family, tmp_path_factory):
    model = tiny_family[1] / "ref-unet"
    out = tmp_path_factory.mktemp("quant")
    assert main(["quantize", f"model={model}", f"output_dir={out}", "quant.rank=8", "quant.calibration.prompts=2",
                 "quant.calibration.steps=2", "quant.calibration.batch_size=2",
                 "quant.calibration.sample_tokens=32"]) == 0
    return model, out


def _eval(out, variants, family, *extra):
    return main(["eval", f"variants={json.dumps(variants)}", "prompts=[single, domain:neon]", "prompts_per_set=2",
                 "steps=2", "batch_size=2", f"evaluator={family / 'evaluator'}", f"output_dir={out}", *extra])


def test_eval_writes_results_report_plots_grids_and_compare_puts_two_side_by_side(quantized, tiny_family, tmp_path):
    model, quant = quantized
    family = tiny_family[1]
    assert _eval(tmp_path / "a", [f"16-bit={model}", f"W4A4={quant}"], family, "latency_repeats=2") == 0
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert {"results_version", "environment", "settings", "seeds", "prompt_sets", "reference", "variants", "notes",
            "plots", "grids", "seconds"} <= set(results)
    assert results["environment"]["versions"]["torch"] and results["settings"]["steps"] == 2
    assert results["prompt_sets"]["domain neon"]["seeds"] == [0, 1]
    assert set(results["variants"]) == {"16-bit", "W4A4"}
    v16, w4 = results["variants"]["16-bit"], results["variants"]["W4A4"]
    assert (v16["kind"], w4["kind"]) == ("16-bit", "W4A4") and w4["source"] == v16["source"]
    for v in (v16, w4):
        assert set(v["alignment"]) == {"single", "domain neon"} and "style" in v["alignment"]["domain neon"]
        assert set(v["fd"]) == {"FD-evaluator", "FD-AlexNet"} and all(x >= 0 for x in v["fd"].values())
        assert v["cost"]["image_s"] > 0 and v["cost"]["step_ms"] is not None and v["cost"]["peak_mib"] > 0
        assert v["size"]["denoiser_mib"] > 0 and v["size"]["disk_mib"] > 0
    assert v16["vs_16bit"] is None  # a 16-bit model is its own source
    assert 0 <= w4["vs_16bit"]["LPIPS"] < 1 and w4["vs_16bit"]["PSNR"] > 5 and w4["vs_16bit"]["SSIM"] <= 1
    assert w4["size"]["denoiser_mib"] < v16["size"]["denoiser_mib"] and w4["size"]["quantize_s"] > 0
    assert w4["ranks"] == {"branch": 8, "adapter": 0}
    assert set(results["reference"]["fd"]) == {"FD-evaluator", "FD-AlexNet"}  # the sampling floor
    assert any(n.startswith("CLIP score: not computed") for n in results["notes"])
    report = (tmp_path / "a" / "report.md").read_text()
    assert "| W4A4 | ref-unet | W4A4 |" in report and "## Cost" in report and "## Notes" in report
    assert len(results["plots"]) >= 2 and len(results["grids"]) == 2
    for png in results["plots"] + results["grids"]:
        assert Image.open(tmp_path / "a" / png).size[0] > 100 and f"({png})" in report
    assert f"(eval/{results['grids'][0]})" in render_report(results, "embedded", link_prefix="eval/")

    # a second eval (16-bit only, no latency), then both side by side
    assert _eval(tmp_path / "b", [f"16-bit={model}"], family, "latency_repeats=0") == 0
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), f"output_dir={tmp_path / 'c'}"]) == 0
    merged = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert list(merged["variants"]) == ["a: 16-bit", "a: W4A4", "b: 16-bit"]
    report = (tmp_path / "c" / "report.md").read_text()
    assert "| a: W4A4 | ref-unet | W4A4 |" in report and "| b: 16-bit | ref-unet | 16-bit |" in report
    assert "| latency_repeats | 2 | 0 |" in report  # the settings that differ, side by side
    grids = [tmp_path / "c" / g for g in merged["grids"]]
    assert len(grids) == 2 and all(g.is_file() for g in grids)
    # reference column + three variants, wider than the single eval's reference + two
    assert Image.open(grids[0]).size[0] > Image.open(tmp_path / "a" / results["grids"][0]).size[0]
    assert len(merged["plots"]) >= 2 and all((tmp_path / "c" / p).is_file() for p in merged["plots"])


@pytest.mark.parametrize("args, message", [
    (["eval", "variants=[x=/no/such/run:0]"], "variant 'x': '/no/such/run' does not exist"),
    (["eval", "variants=[x=/no/such/model]"], "variant 'x': '/no/such/model' does not exist"),
    (["eval", "variants=[ref-unet]"], "'ref-unet' is not label=spec"),
    (["eval", "prompts=[single, suite:nine]"], "'suite:nine' names no prompt suite"),
    (["eval", "steps=0"], "steps must be a positive integer, got 0"),
    (["compare", "/no/a", "/no/b"], "'/no/a' is not a `svdtune eval` output (no results.json in it)"),
    (["compare", "dirs=[/no/a]"], "dirs must name at least two"),
])
def test_bad_input_is_one_clear_line(args, message, capsys, tmp_path):
    assert main([*args, f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_killed_eval_resumes_after_its_finished_variants(quantized, tiny_family, tmp_path, monkeypatch):
    from svdtune.eval import harness

    model, quant = quantized
    run_variant, ran = harness._run_variant, []

    def dies_on_w4a4(cfg, index, v, sets, bar):
        ran.append(v.label)
        if v.label == "W4A4" and len(ran) < 3:
            raise KeyboardInterrupt  # the job is killed while generating the second variant
        return run_variant(cfg, index, v, sets, bar)

    monkeypatch.setattr(harness, "_run_variant", dies_on_w4a4)
    variants = [f"16-bit={model}", f"W4A4={quant}"]
    assert _eval(tmp_path, variants, tiny_family[1], "latency_repeats=0") == 130  # interrupted
    first = json.loads((tmp_path / "progress.json").read_text())["variants"]["16-bit"]
    assert _eval(tmp_path, variants, tiny_family[1], "latency_repeats=0") == 0
    assert ran == ["16-bit", "W4A4", "W4A4"]  # the 16-bit variant was not generated again
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["variants"]["16-bit"] == first and results["variants"]["W4A4"]["vs_16bit"]["PSNR"] > 5
    assert not (tmp_path / "progress.json").exists()
    # other settings: nothing is reused
    assert _eval(tmp_path, variants, tiny_family[1], "latency_repeats=0", "seed=1") == 0
    assert ran[3:] == ["16-bit", "W4A4"]
