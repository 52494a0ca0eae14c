import json

from PIL import Image

from svdtune.config import load_config
from svdtune.quickstart import QuickstartConfig, run_quickstart


def test_quickstart_writes_report_grid_and_config(tmp_path, tiny_family):
    export = tiny_family[1]
    model = str(export / "ref-dit")
    cfg = load_config(QuickstartConfig, "configs/quickstart.yaml",
                      [f"output_dir={tmp_path}", "prompts_per_suite=2", "steps=2", "latency_repeats=1",
                       f"models=[{model}]", f"evaluator={export / 'evaluator'}", "suites=[single, two]",
                       "quant.rank=8", "quant.calibration.prompts=2", "quant.calibration.steps=2",
                       "domain_scenes=20", f"adapter_model={export / 'ref-unet'}", "adapter_steps=2",
                       "adapter_overrides=[distill.prompts=4, distill.steps=2, validation.steps=2, quant.rank=4, "
                       "quant.calibration.prompts=2, quant.calibration.steps=2, batch_size=2]"])
    out = run_quickstart(cfg)
    results = json.loads((out / "results.json").read_text())
    assert set(results["alignment"]) == {"rendered (ceiling)", model, f"{model} W4A4"}
    q = results["quantized"][f"{model} W4A4"]
    assert q["layers"] > 0 and q["layers_ratio"] < 1 and q["psnr_vs_16bit"] > 5
    assert set(results["alignment"][model]) == {"single", "two"}
    cost = results["cost"][model]
    assert cost["latency_s"] > 0 and cost["peak_rss_mib"] > 0 and cost["disk_mib"] > 1
    report = (out / "report.md").read_text()
    assert f"| {model} | two |" in report and f"| {model} W4A4 | two |" in report
    assert "W4A4 (SVDQuant) against 16-bit" in report
    assert len(list(out.glob("*-grid.png"))) == 1
    assert Image.open(next(out.glob("*-grid.png"))).size[0] > 100
    assert (out / "config.yaml").is_file()
    data = results["data"]  # the data stage ran for the world-style domain
    assert data["domain"] == "pastel" and data["read"] == 100 and 0 < data["subset"]["train"] <= 20
    assert data["pairs"]["train"] > 0 and "soft pastel colours" in data["example_pair"][1]
    assert "## Domain data: pastel" in report
    adapter = results["adapter"]  # the trainer ran both objectives on the domain subset
    assert adapter["steps"] == 2 and adapter["loss"] > 0 and "style" in adapter["after"]
    assert "## Domain adapter: pastel" in report
