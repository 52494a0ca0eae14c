"""One demo app for the API and browser tests: the shipped ref-unet (16-bit), a W4A4 quantize folder of
it (tiny calibration), ref-dit (SD3-style, for image-to-image), and a random tiny LLM as the rewriter."""

import socket

import pytest

from tests.conftest import NOT_SHIPPED, SHIPPED


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def quantized_unet(tmp_path_factory):
    from svdtune.cli import main

    if not SHIPPED:
        pytest.skip(NOT_SHIPPED)
    out = tmp_path_factory.mktemp("w4a4-unet")
    assert main(["quantize", "model=ref-unet", f"output_dir={out}", "quant.rank=8", "quant.calibration.prompts=2",
                 "quant.calibration.steps=2", "quant.calibration.batch_size=2",
                 "quant.calibration.sample_tokens=32", "quant.smooth_alphas=[0.5]", "quant.lowrank_iters=1",
                 "quant.shrink_grid=[1.0]"]) == 0  # the cheapest search: about 5 s
    return out


@pytest.fixture(scope="session")
def demo_config(quantized_unet, tiny_llm, tmp_path_factory):
    from svdtune.app.config import DemoConfig

    broken = tmp_path_factory.mktemp("broken-model")  # looks like a diffusers folder, fails to load
    (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline", '
                                             '"unet": ["diffusers", "UNet2DConditionModel"]}')
    return DemoConfig(variants=["16-bit=ref-unet", f"W4A4={quantized_unet}", "dit 16-bit=ref-dit",
                                "gone=/no/such/run:0", f"broken={broken}"],
                      rewriter=str(tiny_llm), rewriter_dtype="float32", steps=2, port=free_port())


@pytest.fixture(scope="session")
def demo_url(demo_config):
    """The app serving on a free port of 127.0.0.1 for the whole session."""
    from svdtune.app.server import launch

    demo, url = launch(demo_config, block=False)
    yield url
    demo.close()
