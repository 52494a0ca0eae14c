from svdtune.rewrite.terms import clean_output, content_words, has_style, missing_words, sanitize, style_terms


def test_content_words_keep_nouns_colours_counts_and_fold_plurals():
    assert content_words("Two red circles and a blue cross at the top left and a circle") == [
        "two", "red", "circles", "blue", "cross", "top", "left"]
    assert content_words("the dishes with berries") == ["dishes", "berries"]
    assert content_words("a 3 by 4 grid") == ["3", "4", "grid"]


def test_missing_words_names_what_the_rewrite_dropped():
    styled = "a large red circle at the top left, in soft pastel colours on a cream background"
    assert missing_words("a red circle", styled) == []
    assert missing_words("red circles", styled) == []  # plural in the prompt, singular in the rewrite
    assert missing_words("a red circle and a blue square", styled) == ["blue", "square"]
    assert missing_words("a blue cross and a blue cross", "a small blue cross at the top") == ["blue", "cross"]
    # plurals and singulars of every regular kind match; none is taken for another word
    for singular, plural in [("horse", "horses"), ("shoe", "shoes"), ("rose", "roses"), ("dish", "dishes"),
                             ("box", "boxes"), ("glass", "glasses"), ("tomato", "tomatoes"), ("berry", "berries"),
                             ("cookie", "cookies"), ("bus", "buses")]:
        assert missing_words(f"a {singular}", f"two {plural} grazing") == [], singular
        assert missing_words(f"{plural}", f"a {singular} alone") == [], plural
    assert missing_words("a horse", "a house") == ["horse"]


def test_style_terms_match_word_for_word():
    terms = style_terms(", professional food photography, shallow depth of field")
    assert terms == ["professional food photography", "shallow depth of field"]
    assert has_style("Pizza, professional food-photography.", terms)
    assert not has_style("a photograph of professional food", terms)
    assert has_style("a red circle, in soft pastel colours on a cream background",
                     style_terms(", in soft pastel colours on a cream background"))


def test_sanitize_replaces_bad_bytes_and_control_characters():
    assert sanitize(b"a red \xff circle") == ("a red \ufffd circle", ["bytes that are not UTF-8 were replaced"])
    surrogate = b"a red \xff circle".decode("utf-8", errors="surrogateescape")  # how argv carries them
    assert sanitize(surrogate)[0] == "a red \ufffd circle"
    assert sanitize("a red \ud83d circle?")[0] == "a red \ufffd circle?"  # a lone surrogate from broken JSON
    assert sanitize("a red\x00 circle\u200b\x1b\n") == ("a red circle", ["control characters were removed"])
    assert sanitize("  a  red\tcircle ") == ("a red circle", [])


def test_clean_output_keeps_one_prompt_line():
    assert clean_output('Here is the rewritten prompt: "a red circle, in pastel"<|im_end|>\nmore') == "a red circle, in pastel"
    assert clean_output("\n  Prompt: a blue square  \n\nsecond line") == "a blue square"
    assert clean_output("") == ""
