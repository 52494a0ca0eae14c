import pytest

from svdtune.rewrite.metrics import rewrite_scores

SUFFIX = ", in soft pastel colours on a cream background"


def test_scores_against_hand_counts():
    plains = ["a red circle", "a blue square"]
    rewrites = ["a large red circle" + SUFFIX, "a square"]
    s = rewrite_scores(plains, rewrites, ["a large red circle at the top" + SUFFIX, "a small blue square" + SUFFIX],
                       [SUFFIX, SUFFIX])
    assert s["retention"] == pytest.approx(75.0)       # 3 of 4 content words kept
    assert s["exact_retention"] == pytest.approx(50.0)
    assert s["style_rate"] == pytest.approx(50.0)
    assert s["mean_words"] == pytest.approx((12 + 2) / 2)
    assert 0 < s["chrf"] < 100


def test_identical_rewrites_score_full_chrf():
    s = rewrite_scores(["a red circle"], ["a red circle" + SUFFIX], ["a red circle" + SUFFIX], [SUFFIX])
    assert s["chrf"] == pytest.approx(100.0)
