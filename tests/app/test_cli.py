"""`svdtune demo` on the command line: flags and keys reach the config; bad values are one error line."""

import pytest

from svdtune.cli import main


@pytest.fixture
def started(monkeypatch):
    import svdtune.app.server as server

    configs = []
    monkeypatch.setattr(server, "run_demo", configs.append)  # everything but the serving
    return configs


def test_flags_and_overrides_reach_the_config(started):
    assert main(["demo", "--config", "configs/demo.yaml", "--host", "0.0.0.0", "--port", "7999", "steps=8"]) == 0
    cfg = started[0]
    assert (cfg.host, cfg.port, cfg.steps, cfg.listens_beyond_this_machine) == ("0.0.0.0", 7999, 8, True)
    assert main(["demo"]) == 0 and (started[1].host, started[1].port) == ("127.0.0.1", 7860)  # this machine only


@pytest.mark.parametrize("args, message", [
    (["limits.max_steps=-1"], "limits.max_steps must be positive, got -1"),
    (["domains=[sepia]"], "domains: unknown domain 'sepia'"),
    (["variants=[]"], "variants: give at least one label=spec"),
    (["colour=red"], "unknown key 'colour'"),
])
def test_bad_config_is_one_error_line(started, capsys, args, message):
    assert main(["demo", *args]) == 2
    assert message in capsys.readouterr().err and not started


def test_the_three_modes_share_one_bounded_queue():
    from svdtune.app.config import DemoConfig
    from svdtune.app.engine import Engine
    from svdtune.app.server import build_app

    cfg = DemoConfig(variants=["16-bit=ref-unet"], concurrency=2, queue_size=5)
    demo = build_app(Engine(cfg)).queue(default_concurrency_limit=cfg.concurrency, max_size=cfg.queue_size)
    generate = [fn for fn in demo.fns.values() if fn.api_name in ("text", "image", "sketch")]
    assert sorted(fn.api_name for fn in generate) == ["image", "sketch", "text"]
    assert {(fn.concurrency_id, fn.concurrency_limit) for fn in generate} == {("generate", "default")}
    assert demo._queue.default_concurrency_limit == 2 and demo._queue.max_size == 5
