import numpy as np

from svdtune.data.embed import Embedder


def test_embeddings_are_unit_norm_meaningful_and_cached(tmp_path):
    texts = ["a plate of pasta with tomato sauce", "spaghetti with marinara on a dish", "a red bus on a street"]
    first = Embedder(cache=tmp_path / "e.sqlite")
    v = first.embed(texts)
    assert v.shape == (3, 384) and first.misses == 3
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=2e-3)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # pasta is closer to spaghetti than to a bus
    again = Embedder(cache=tmp_path / "e.sqlite")
    np.testing.assert_array_equal(again.embed(texts[::-1]), v[::-1])
    assert again.misses == 0 and again.hits == 3 and again._model is None  # the model was never loaded
