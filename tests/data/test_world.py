import random

import numpy as np
import pytest

from svdtune.data import world


def test_sampling_and_rendering_are_deterministic():
    a = world.sample_scene(world.scene_rng(3, 17), style="neon")
    b = world.sample_scene(world.scene_rng(3, 17), style="neon")
    assert a == b
    np.testing.assert_array_equal(world.render(a), world.render(b))
    assert world.render(a).dtype == np.float32 and world.render(a).shape == (48, 48, 3)


def test_detailed_caption_round_trips_through_the_parser():
    rng = random.Random(0)
    for _ in range(200):
        scene = world.sample_scene(rng, style=rng.choice(list(world.STYLES)), held_out="any")
        parsed = world.parse_prompt(scene.detailed_caption())
        expected = [{"shape": o.shape, "colour": o.colour, "size": o.size, "position": o.position}
                    for o in scene._ordered()]
        assert parsed == expected
        assert world.prompt_style(scene.detailed_caption()) == scene.style
        assert world.unknown_words(scene.detailed_caption()) == []


def test_short_caption_names_colour_and_shape_only():
    scene = world.Scene((world.WorldObject("circle", "orange", "large", 0),))
    assert scene.short_caption() == "an orange circle"
    assert world.parse_prompt(scene.short_caption()) == [{"shape": "circle", "colour": "orange"}]


def test_held_out_pairs_are_excluded_or_required():
    rng = random.Random(1)
    train = [world.sample_scene(rng) for _ in range(300)]
    assert not any(s.has_held_out for s in train)
    held = [world.sample_scene(rng, held_out="only") for _ in range(50)]
    assert all(s.has_held_out for s in held)


def test_objects_stay_in_distinct_cells_and_inside_the_image():
    rng = random.Random(2)
    for _ in range(100):
        scene = world.sample_scene(rng, n_objects=3)
        assert len({o.cell for o in scene.objects}) == 3
    # a large object in a corner cell never touches the border
    for shape in world.SHAPES:
        img = world.render(world.Scene((world.WorldObject(shape, "red", "large", 0, -1.0, -1.0),)))
        assert np.all(img[0] > 0.99) and np.all(img[:, 0] > 0.99)


def test_styles_look_different():
    obj = (world.WorldObject("square", "blue", "large", 4),)
    images = {s: world.render(world.Scene(obj, s))[16:32, 16:32] for s in world.STYLES}  # the centre cell
    for a in world.STYLES:
        for b in world.STYLES:
            if a < b:
                assert np.abs(images[a] - images[b]).mean() > 0.08, (a, b)


def test_unknown_words_and_bad_arguments():
    assert world.unknown_words("a red dog at the top") == ["dog"]
    assert world.unknown_words("two red circles") == []
    with pytest.raises(ValueError, match="unknown style"):
        world.sample_scene(random.Random(0), style="sepia")
