import json

from PIL import Image

from svdtune.config import load_config
from svdtune.quickstart import QuickstartConfig, run_quickstart


def test_quickstart_runs_every_stage_and_ends_with_the_eval_report(tmp_path, tiny_family, tiny_llm):
    export = tiny_family[1]
    model, adapter_model = str(export / "ref-dit"), str(export / "ref-unet")
    cfg = load_config(QuickstartConfig, "configs/quickstart.yaml",
                      [f"output_dir={tmp_path}", "prompts_per_suite=2", "steps=2", "latency_repeats=1",
                       f"models=[{model}]", f"evaluator={export / 'evaluator'}", "suites=[single, two]",
                       "quant.rank=8", "quant.calibration.prompts=2", "quant.calibration.steps=2",
                       "domain_scenes=20", f"adapter_model={adapter_model}", "adapter_steps=2",
                       "adapter_overrides=[distill.prompts=4, distill.steps=2, validation.steps=2, quant.rank=4, "
                       "quant.calibration.prompts=2, quant.calibration.steps=2, batch_size=2]",
                       "rewriter_steps=2", "rewriter_prompts=2",
                       f"rewriter_overrides=[base={tiny_llm}, batch_size=2, eval_pairs=2, decoding.max_new_tokens=8]"])
    out = run_quickstart(cfg)
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    assert (out / "config.yaml").is_file()

    data = results["data"]  # the data stage ran for the world-style domain
    assert data["domain"] == "pastel" and data["read"] == 100 and 0 < data["subset"]["train"] <= 20
    assert data["pairs"]["train"] > 0 and "soft pastel colours" in data["example_pair"][1]
    assert "## Domain data: pastel" in report
    adapter = results["adapter"]  # the trainer ran both objectives on the domain subset
    assert adapter["steps"] == 2 and adapter["loss"] > 0 and "style" in adapter["after"]
    assert "## Domain adapter: pastel" in report
    rewriter = results["rewriter"]  # a short rewriter run, then plain vs rewritten prompts end to end
    assert rewriter["steps"] == 2 and len(rewriter["examples"]) == 2
    assert set(rewriter["end_to_end"]) == {"plain", "rewritten"} and "style" in rewriter["end_to_end"]["plain"]
    assert "## Prompt rewriter: pastel" in report and (out / "rewrites.png").is_file()

    # It ends with the eval of 16-bit vs W4A4 vs W4A4 + adapter, linked from this folder.
    labels = ["ref-dit 16-bit", "ref-dit W4A4", "ref-unet W4A4 + pastel"]
    assert list(results["eval"]["variants"]) == labels
    assert (out / "quant" / "ref-dit" / "quant_manifest.json").is_file()
    assert all(f"| {label} |" in report for label in labels) and "## Cost" in report
    links = [line[line.index("](") + 2:-1] for line in report.splitlines() if line.startswith("![")]
    assert any("plots/" in link for link in links) and any("grids/" in link for link in links)
    for link in links:
        assert Image.open(out / link).size[0] > 50, link
