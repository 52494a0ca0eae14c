import pytest

from svdtune.config import ConfigError
from svdtune.data import world
from svdtune.data.domains import load_domain, plural_forms, shipped_domains, word_pattern


def test_keywords_match_whole_words_and_plurals():
    pat = word_pattern(["cat", "strawberry", "loaf", "hot dog", "knife", "dish"])
    for text in ("two cats on a bed", "fresh strawberries", "three loaves of bread", "hot dogs with mustard",
                 "a hot-dog stand", "knives on a board", "dirty dishes"):
        assert pat.search(text), text
    for text in ("a category of things", "a concatenation", "a hotel dogma", "fishing"):
        assert not pat.search(text), text
    assert plural_forms("ice cream") >= {"ice cream", "ice creams"}
    assert not word_pattern(["cub"]).search("cubes of bread")  # "-es" only after s, x, z, ch, sh, o
    assert word_pattern(["car", "car seat", "cat"]).search("a car seat").group(0) == "car seat"  # the longest


def test_depictions_are_not_the_thing_they_show():
    animals = load_domain("animals")
    neg, kw = animals.negative_pattern(), animals.keyword_pattern()
    for text in ("a statue of a horse in a park", "a toy fire truck shaped like a dog", "a man in a gorilla suit",
                 "cookies shaped like little dogs", "a shirt with a cat printed on it", "a teddy bear on a bed"):
        assert kw.search(text) and not kw.search(neg.sub(" ", text)), text
    for text in ("a puppy chewing a teddy bear", "a picture of a dog on a couch", "a statue with a pigeon on its head"):
        assert kw.search(neg.sub(" ", text)), text
    # what is depicted runs to the end of its noun phrase; names and cooked food are no animals either
    for text in ("a phone that shows a picture of a small black cat", "a clock shaped like a cat with a tail",
                 "a child's drawing of a sun and a dog", "a Detroit Tigers player sliding into base",
                 "a heap of steamed blue crabs", "a bag of dog food on the porch", "a woman in a peacock feather hat"):
        assert kw.search(text) and not kw.search(neg.sub(" ", text)), text
    indoor = load_domain("indoor")
    masked = indoor.negative_pattern().sub(" ", "a painting of a mountain lake hanging above the fireplace")
    assert not indoor.veto_pattern().search(masked) and indoor.keyword_pattern().search(masked)
    # a depicted thing also ends where a verb takes its object: the living room is real
    assert indoor.keyword_pattern().search(indoor.negative_pattern().sub(" ", "a toy train circling the living room"))


@pytest.mark.parametrize("domain, dropped, kept", [
    # absent, made of something, a sign's text, a dish, a restaurant's name, a place for vehicles
    ("vehicles", "a bus stop shelter with no bus in sight", "a bus pulling up to a bus stop"),
    ("vehicles", "a charging station for electric cars", "an electric car at a charging station"),
    ("animals", "a stone lion guarding the steps", "a lion resting on a stone ledge"),
    ("animals", "a green street sign for elk avenue", "an elk grazing beside a street sign"),
    ("animals", "a street vendor grilling skewers of chicken satay", "a chicken pecking at grain"),
    ("food", "a painted sign outside a barbecue joint", "a plate of barbecue ribs"),
    ("landscape", "a view of snowy mountains through the window of a cabin", "snowy mountains above a lake"),
    # snow and sky are often only the setting; a toy breed is a real dog; a hot air balloon flies
    ("landscape", "a bulldog sitting in the snow", "a snowy ridge above the tree line"),
    ("animals", "a toy dog on a shelf", "a toy poodle asleep on a sofa"),
    ("vehicles", "a balloon shaped like a car", "a hot air balloon over a valley"),
])
def test_what_is_not_the_domain_is_masked_and_the_real_thing_kept(domain, dropped, kept):
    d = load_domain(domain)
    neg, kw, veto = d.negative_pattern(), d.keyword_pattern(), d.veto_pattern()
    for text, expected in ((dropped, False), (kept, True)):
        masked = neg.sub(" ", text)
        assert bool(kw.search(masked) and not (veto and veto.search(masked))) == expected, text


def test_shipped_domains_load_and_cover_the_real_and_world_domains():
    names = shipped_domains()
    assert {"food", "animals", "landscape", "vehicles", "indoor"} <= set(names)
    assert set(world.STYLES) - {"plain"} <= set(names)
    for name in names:
        d = load_domain(name)
        assert d.name == name and d.keyword_pattern() is not None and d.style_suffix and d.anchor_texts()
        if name in world.STYLES:  # the rewriter learns the world's own style phrase
            assert d.style_suffix == f", {world.STYLES[name]}" and d.categories == [name]


def test_unknown_domain_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown domain 'sepia'; shipped domains: animals"):
        load_domain("sepia")
    bad = tmp_path / "d.yaml"
    bad.write_text("name: x\nsimilarity: 3\ndescription: y\n")
    with pytest.raises(ConfigError, match="similarity: 3.0 is not a cosine similarity"):
        load_domain(str(bad))
