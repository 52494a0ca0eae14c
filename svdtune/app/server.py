"""The gradio layout of `svdtune demo`; every decision (checks, models, generation) is in the engine.

Three API endpoints, one per input mode: /text, /image and /sketch. Their inputs reach the handler
raw (preprocess=False) so that a bad upload gets the engine's message, not a decoding traceback;
gradio still checks that uploaded paths are its own uploads.
"""

from __future__ import annotations

import logging
import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported; nothing leaves the machine

import gradio as gr  # noqa: E402

from svdtune.app.config import DemoConfig  # noqa: E402
from svdtune.app.engine import HISTORY_COLUMNS, Engine, Request  # noqa: E402
from svdtune.app.limits import EXAMPLE_PROMPT  # noqa: E402
from svdtune.errors import UserError  # noqa: E402

log = logging.getLogger("svdtune")
# The reference models draw 48x48 images: show them big, without blurring the pixels.
CSS = "#output-image img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }"


def _upload(payload) -> tuple[str | None, str | None]:
    """(server path, the user's file name) of a raw gr.Image / gr.Sketchpad value."""
    if isinstance(payload, dict) and "composite" in payload:  # Sketchpad: the flattened drawing
        payload = payload.get("composite")
    if isinstance(payload, dict):
        return payload.get("path"), payload.get("orig_name")
    return None, None


def handler(engine: Engine, mode: str):
    def run(prompt, rewrite, domain, variant, steps, guidance, seed, *rest):
        *image, strength, history = rest
        path, name = _upload(image[0]) if image else (None, None)
        request = Request(variant=variant, prompt=prompt, mode=mode, image=path, image_name=name, rewrite=rewrite,
                          domain=domain, steps=steps, guidance=guidance, seed=seed, strength=strength)
        try:
            result = engine.generate(request)
        except UserError as e:  # bad input, or a variant that cannot load: said as it is
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:  # anything else: logged in full; the app keeps serving
            log.exception("demo: generation failed")
            raise gr.Error(f"generation failed: {type(e).__name__}: {e}") from None
        if result.styled and result.styled.source in ("fallback", "suffix"):
            gr.Warning(result.styled.note)
        history = ([result.history_row()] + list(history or []))[:engine.cfg.history_rows]
        used = result.prompt + (f"\n({result.styled.note})" if result.styled else "")
        info = result.summary + "".join(f"\n{n}" for n in result.notes if not result.styled or n != result.styled.note)
        return result.image, used, info, history, history

    return run


def build_app(engine: Engine) -> gr.Blocks:
    cfg, lim = engine.cfg, engine.cfg.limits
    with gr.Blocks(title="svdtune demo") as demo:
        gr.Markdown("## svdtune demo: 16-bit vs SVDQuant W4A4 vs W4A4 + domain adapter")
        if engine.notes:
            gr.Markdown("\n".join(f"- left out: {n}" for n in engine.notes), elem_id="variant-notes")
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label=f"prompt (at most {lim.max_prompt_chars} characters)", lines=2,
                                    placeholder=EXAMPLE_PROMPT, elem_id="prompt")
                with gr.Row():
                    rewrite = gr.Checkbox(label="rewrite the prompt into the domain's style", value=False,
                                          info=engine.styler.status, elem_id="rewrite")
                    domain = gr.Dropdown(cfg.domains, value=cfg.domains[0], label="domain")
                variant = gr.Dropdown(list(engine.variants), value=next(iter(engine.variants)), label="model variant",
                                      elem_id="variant")
                with gr.Row():
                    steps = gr.Slider(1, lim.max_steps, value=cfg.steps, step=1, label="steps")
                    guidance = gr.Slider(0, lim.max_guidance, value=cfg.guidance_scale, step=0.5, label="guidance")
                    seed = gr.Number(cfg.seed, precision=0, minimum=0, label="seed")
                with gr.Tabs():
                    with gr.Tab("Text"):
                        text_button = gr.Button("Generate", variant="primary", elem_id="generate")
                    with gr.Tab("Image"):
                        upload = gr.Image(type="filepath", sources=["upload", "clipboard"], label=(
                            f"input image (at most {lim.max_upload_mb:g} MB; resized to the model's size)"), elem_id="upload")
                        image_button = gr.Button("Generate from image", variant="primary", elem_id="generate-image")
                    with gr.Tab("Sketch"):
                        sketch = gr.Sketchpad(canvas_size=(384, 384), format="png", label="sketch", elem_id="sketch")
                        sketch_button = gr.Button("Generate from sketch", variant="primary", elem_id="generate-sketch")
                strength = gr.Slider(0.05, 1, value=cfg.strength, step=0.05,
                                     label="image / sketch strength (1 = ignore the input's content)")
            with gr.Column():
                output = gr.Image(label="result", type="pil", format="png", height=384, interactive=False,
                                  elem_id="output-image")
                used = gr.Textbox(label="prompt given to the model", interactive=False, elem_id="used-prompt")
                info = gr.Textbox(label="this run", lines=3, interactive=False, elem_id="run-info")
                table = gr.Dataframe(headers=HISTORY_COLUMNS, label="history (newest first)", interactive=False,
                                     wrap=True, column_widths=["17%", "10%", "28%", "11%", "12%", "11%", "11%"],
                                     elem_id="history")
        history = gr.State([])
        common = [prompt, rewrite, domain, variant, steps, guidance, seed]
        outputs = [output, used, info, table, history]
        for mode, button, extra in (("text", text_button, []), ("image", image_button, [upload]),
                                    ("sketch", sketch_button, [sketch])):
            # one concurrency group for the three modes: `concurrency` generations at a time in all
            button.click(handler(engine, mode), common + extra + [strength, history], outputs, api_name=mode,
                         preprocess=False, concurrency_id="generate")
    return demo


def launch(cfg: DemoConfig, block: bool = True) -> tuple[gr.Blocks, str]:
    """Build and serve the app; (app, local URL). block=False returns once it is serving (tests)."""
    if cfg.listens_beyond_this_machine:
        log.warning("demo: listening on %s: anyone who can reach this machine on port %d can use it", cfg.host, cfg.port)
    demo = build_app(Engine(cfg)).queue(default_concurrency_limit=cfg.concurrency, max_size=cfg.queue_size)
    _, url, _ = demo.launch(server_name=cfg.host, server_port=cfg.port, prevent_thread_lock=not block,
                            max_file_size=int(cfg.limits.max_upload_mb * 2**20), ssr_mode=False, css=CSS,
                            footer_links=["api"], quiet=not block)
    return demo, url


def run_demo(cfg: DemoConfig) -> None:
    launch(cfg, block=True)
