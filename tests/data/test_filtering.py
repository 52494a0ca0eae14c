import numpy as np

from svdtune.data import filtering
from svdtune.data.domains import Domain
from svdtune.data.records import Columns


def test_decide_trusts_categories_then_negatives_then_keywords():
    cols = Columns()
    cols.add("m1", "mjhq", "a bowl of ramen", category="food")
    cols.add("m2", "mjhq", "a pizza logo", category="logo")           # the category wins over the keyword
    cols.add("c1", "coco", "a slice of pizza on a plate")
    cols.add("c2", "coco", "a toy pizza made of plastic")             # depiction: masked, nothing left
    cols.add("c3", "coco", "a man riding a skateboard")
    cols.add("c4", "coco", "a pizza next to a hot dog")               # the negative is masked, pizza stays
    cols.add("c5", "coco", "a hot dog stand on a corner")
    cols.add("c6", "coco", "a pizza box left outside on the curb")    # veto
    domain = Domain(name="food", description="food", keywords=["pizza", "ramen", "dog"], negative_keywords=["hot dog"],
                    veto_keywords=["curb"], categories=["food"], exclude_depictions=True)
    ds = filtering.decide(cols.dataset(), domain)
    assert list(zip(ds["decision"], ds["reason"])) == [
        (1, "category match"), (0, "other category"), (1, "keyword match"), (0, "negative keyword"), (-1, ""),
        (1, "keyword match"), (0, "negative keyword"), (0, "veto keyword")]


def test_near_duplicates_are_greedy_in_order():
    v = np.array([[1, 0], [0.999, 0.0447], [0, 1], [0.0447, 0.999], [0.7071, 0.7071]], np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    np.testing.assert_array_equal(filtering.near_duplicates(v, 0.99, block=2), [0, 1, 0, 1, 0])
    # a duplicate of a dropped duplicate is kept if it is not close to a kept one
    chain = np.array([[1, 0], [0.98, 0.199], [0.92, 0.39]], np.float32)
    chain /= np.linalg.norm(chain, axis=1, keepdims=True)
    np.testing.assert_array_equal(filtering.near_duplicates(chain, 0.975), [0, 1, 0])


def test_exact_duplicates_ignore_case_and_punctuation():
    assert filtering.exact_duplicates(["A dog.", "a dog", "a  DOG!", "a cat"]).tolist() == [False, True, True, False]


def test_split_hash_is_stable_and_balance_caps_each_source():
    h = filtering.id_hash(["a", "b", "c"])
    np.testing.assert_array_equal(h, filtering.id_hash(["a", "b", "c"]))
    assert ((h >= 0) & (h < 1)).all()
    keep = filtering.balance(["x", "x", "x", "y"], np.array([0.3, 0.1, 0.2, 0.5]), cap=2)
    assert keep.tolist() == [False, True, True, True]


def test_top_k_keeps_the_most_similar():
    assert filtering.by_similarity(np.array([0.1, 0.9, 0.5]), 0.0, top_k=2).tolist() == [False, True, True]
    assert filtering.by_similarity(np.array([0.1, 0.9, 0.5]), 0.5).tolist() == [False, True, True]
