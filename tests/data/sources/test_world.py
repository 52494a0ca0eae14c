import numpy as np
import pytest

from svdtune.data import world
from svdtune.data.sources.world import read_world, render_address


def test_world_records_are_deterministic_and_render_from_their_address():
    a, b = read_world(4, styles=("plain", "neon"), seed=3), read_world(4, styles=("plain", "neon"), seed=3)
    assert a["long_caption"] == b["long_caption"] and len(a) == 8
    row = a[5]
    assert row["category"] == "neon" and row["image"] == "world://neon/3/1"
    assert world.prompt_style(row["long_caption"]) == "neon"
    assert world.parse_prompt(row["long_caption"])  # the detailed caption names its objects
    assert render_address(row["image"]).shape == (world.IMAGE_SIZE, world.IMAGE_SIZE, 3)
    np.testing.assert_array_equal(render_address(row["image"]), render_address("world://neon/3/1"))


def test_a_bad_address_says_what_is_expected():
    with pytest.raises(ValueError, match=r"world://<style>/<seed>/<index>"):
        render_address("world://sepia/0/1")
