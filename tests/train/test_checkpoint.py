import torch

from svdtune.train.checkpoint import load_training_state, prune_checkpoints, save_training_state
from svdtune.train.reference.stages import StageConfig, fit, step_rng


def _run(tmp_path, steps, stop_after=None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    target = torch.nn.Linear(4, 1)

    def loss_fn(step):
        if stop_after is not None and step == stop_after:
            raise KeyboardInterrupt
        _, gen = step_rng(0, step)
        x = torch.randn(16, 4, generator=gen)
        return (model(x) - target(x).detach()).pow(2).mean()

    cfg = StageConfig(steps=steps, batch_size=16, lr=1e-2, warmup=2, save_every=3)
    try:
        fit("t", {"m": model}, loss_fn, cfg, tmp_path / "ckpt")
    except KeyboardInterrupt:
        pass
    return model


def test_resumed_run_matches_uninterrupted(tmp_path):
    straight = _run(tmp_path / "a", 10)
    _run(tmp_path / "b", 10, stop_after=7)  # killed after the step-6 checkpoint
    resumed = _run(tmp_path / "b", 10)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_missing_checkpoint_starts_at_zero_and_saves_atomically(tmp_path):
    model = torch.nn.Linear(2, 2)
    assert load_training_state(tmp_path / "none", {"m": model}) == 0
    save_training_state(tmp_path / "c", 5, {"m": model})
    save_training_state(tmp_path / "c", 6, {"m": model})
    assert load_training_state(tmp_path / "c", {"m": model}) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_a_save_killed_between_its_renames_resumes_from_the_previous_checkpoint(tmp_path):
    model = torch.nn.Linear(2, 2)
    save_training_state(tmp_path / "c", 5, {"m": model})
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    (tmp_path / "c").rename(tmp_path / "c.old")  # what the next save leaves if killed after its first rename
    with torch.no_grad():
        model.weight.zero_()
    assert load_training_state(tmp_path / "c", {"m": model}) == 5
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())


def test_pruning_keeps_the_newest_and_drops_what_killed_saves_left(tmp_path):
    for name in ("step-0000002", "step-0000004.tmp", "step-0000006", "step-0000010", "notes"):
        (tmp_path / name).mkdir()
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "step-0000006", "step-0000010"]
