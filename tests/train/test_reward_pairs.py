"""`svdtune reward-pairs` on real parts at toy scale: an (untuned, tiny) rewriter's candidates
rendered by the shipped 16-bit reference UNet and ranked by the world evaluator."""

import json

import pytest

from svdtune.config import load_config
from svdtune.train.reward_pairs import RewardPairsConfig, image_rewards, run_reward_pairs
from svdtune.train.rewriter import load_pairs


def test_the_best_rendered_rewrite_becomes_the_pair(tiny_llm, world_pairs, tmp_path, monkeypatch):
    cfg = load_config(RewardPairsConfig, None, [f"pairs={world_pairs[0]}", f"rewriter={tiny_llm}", "images=ref-unet",
                                                "prompts=3", "samples=1", "steps=2", f"output_dir={tmp_path / 'out'}"])
    out = run_reward_pairs(cfg)
    pairs = load_pairs([str(out)], "train")
    report = json.loads((out / "report.json").read_text())
    assert len(pairs) == 3 and set(pairs["domain"]) == {"pastel"} and len(load_pairs([str(out)], "val")) == 0
    for pair, ranked in zip(pairs, report["ranked"]):
        assert pair["plain"] == ranked["plain"] and len(ranked["rewrites"]) == 2  # greedy + one sample
        best = max(range(2), key=lambda k: (ranked["rewards"][k], -k))  # the greedy one on ties
        assert pair["styled"] == ranked["rewrites"][best] and pair["similarity"] == pytest.approx(ranked["rewards"][best])
    assert (out / "config.yaml").is_file()

    # A rerun (after a kill, say) takes every finished candidate round from disk and renders nothing.
    import svdtune.generate

    def no_rendering(*args, **kwargs):
        raise AssertionError("a finished round was rendered again")

    monkeypatch.setattr(svdtune.generate, "generate_images", no_rendering)
    again = load_pairs([str(run_reward_pairs(cfg))], "train")
    assert again["styled"] == pairs["styled"]


def test_rewards_rank_style_and_objects_and_unknown_domains_are_refused():
    perfect = dict(style=1.0, all=1.0, colour=1.0, shape=1.0, count=1.0)
    rewards = image_rewards([perfect, perfect | {"all": 0.0, "shape": 0.5}, perfect | {"style": 0.0}])
    assert rewards.tolist() == pytest.approx([3.0, 1 + 2.5 / 3, 2.0])
    with pytest.raises(ValueError, match="'food' is not a world style"):
        RewardPairsConfig(domain="food").validate()
