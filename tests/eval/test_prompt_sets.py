import numpy as np
import pytest

from svdtune.data import world
from svdtune.errors import UserError
from svdtune.eval.prompt_sets import parse, parse_all


def test_suites_and_domains_come_with_their_rendered_scenes():
    single = parse("single", 3)
    assert single.kind == "suite" and len(single.prompts) == 3 and single.reference.shape == (3, 48, 48, 3)
    assert parse("suite:single", 3).prompts == single.prompts  # deterministic draw
    neon = parse("domain:neon", 4)
    assert neon.name == "domain neon" and all(world.prompt_style(p) == "neon" for p in neon.prompts)
    assert neon.is_world and neon.reference_source == "rendered scenes"
    again = neon.resample()  # an independent draw of the same style, for the Fréchet floor
    assert again.shape == neon.reference.shape and not np.array_equal(again, neon.reference)


def test_prompt_file_and_data_build_output(tmp_path):
    import datasets

    path = tmp_path / "prompts.txt"
    path.write_text("a red dragon\n\n  a blue square  \n")
    file_set = parse(f"file:{path}", 0)
    assert file_set.prompts == ["a red dragon", "a blue square"] and file_set.reference is None
    assert not file_set.is_world  # "dragon": alignment cannot be scored

    rows = datasets.Dataset.from_dict({
        "short_caption": ["a red circle", "a blue cross"],
        "long_caption": ["", "a small blue cross on the left, on a white background"],  # the short one stands in
        "image": ["world://plain/0/1", "world://plain/0/2"]})
    datasets.DatasetDict({"train": rows, "val": rows}).save_to_disk(str(tmp_path / "subset" / "dataset"))
    data = parse(f"data:{tmp_path / 'subset'}", 5)
    assert data.prompts == ["a red circle", "a small blue cross on the left, on a white background"]
    assert data.reference.shape == (2, 48, 48, 3) and data.reference_source == "data images"


@pytest.mark.parametrize("spec, message", [
    ("nine", "'nine' is not a prompt set"),
    ("suite:nine", "'suite:nine' names no prompt suite"),
    ("domain:sepia", "'sepia' is not a world style"),
    ("file:/no/such.txt", "the prompt file '/no/such.txt' does not exist"),
    ("data:/no/such", "'/no/such' does not exist"),
])
def test_bad_prompt_sets_name_the_value(spec, message):
    with pytest.raises(UserError, match=message):
        parse(spec, 2)


def test_a_set_listed_twice_is_refused():
    with pytest.raises(UserError, match="'single' is listed twice"):
        parse_all(["single", "suite:single"], 2)
