"""Domains: what a domain adapter is trained on, defined by a YAML file in `configs/domains/`.

    name: food
    description: photographs of food ...        # embedded, with the examples, as the domain's centre
    keywords: [pizza, sandwich, ...]            # matched on word boundaries, plurals included
    synonyms: [snack, ...]                      # matched like keywords
    negative_keywords: [hot dog, ...]           # phrases that are not the domain (a hot dog is no dog)
    veto_keywords: [outside, ...]               # context that rules the domain out whatever else matches
    exclude_depictions: true                    # toys, statues, pictures, costumes... are not the thing
    categories: [food]                          # MJHQ categories (or world styles) that are the domain
    examples: ["a plate of pasta ...", ...]
    style_suffix: ", professional food photography, ..."   # what the rewriter learns to add
    similarity: 0.5                             # embedding threshold for captions no keyword decided

Keywords and negatives are phrases matched on word boundaries (plurals included) or, prefixed
with `re:`, regular expressions. Negatives mask what they match before keywords are looked for:
"a puppy chewing a teddy bear" is still about a puppy, "a teddy bear on a bed" has no animal left
and is dropped.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from svdtune.config import CONFIGS, ConfigError, load_config

DOMAIN_DIR = CONFIGS / "domains"


@dataclasses.dataclass
class Domain:
    name: str = ""
    description: str = ""
    keywords: list[str] = dataclasses.field(default_factory=list)
    synonyms: list[str] = dataclasses.field(default_factory=list)
    negative_keywords: list[str] = dataclasses.field(default_factory=list)
    veto_keywords: list[str] = dataclasses.field(default_factory=list)
    categories: list[str] = dataclasses.field(default_factory=list)
    examples: list[str] = dataclasses.field(default_factory=list)
    style_suffix: str = ""
    exclude_depictions: bool = False
    similarity: float = 0.5
    top_k: int = 0  # > 0: keep the k most similar undecided captions instead of a threshold

    def validate(self) -> None:
        if not self.name:
            raise ValueError("name: a domain needs a name")
        if not self.description and not self.examples:
            raise ValueError("description: give a description or examples (they define the embedding centre)")
        if not -1 <= self.similarity <= 1:
            raise ValueError(f"similarity: {self.similarity} is not a cosine similarity in [-1, 1]")

    def keyword_pattern(self) -> re.Pattern | None:
        return word_pattern([*self.keywords, *self.synonyms])

    def veto_pattern(self) -> re.Pattern | None:
        return word_pattern(self.veto_keywords)

    def negative_pattern(self) -> "Mask | None":
        phrases = [*self.negative_keywords, *([f"re:{d}" for d in DEPICTIONS] if self.exclude_depictions else [])]
        return Mask.of(phrases)

    def anchor_texts(self) -> list[str]:
        return [t for t in (self.description, *self.examples) if t]


def plural_forms(phrase: str) -> set[str]:
    """The phrase and the regular plurals of its last word (dish -> dishes, berry -> berries, loaf -> loaves)."""
    head, _, word = phrase.lower().strip().rpartition(" ")
    forms = {word, word + "s"}
    if word.endswith(("s", "x", "z", "ch", "sh", "o")):  # not "cub" -> "cubes"
        forms.add(word + "es")
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        forms.add(word[:-1] + "ies")
    if word.endswith("f"):
        forms.add(word[:-1] + "ves")
    if word.endswith("fe"):
        forms.add(word[:-2] + "ves")
    return {f"{head} {f}".strip() for f in forms}


def word_pattern(phrases: list[str]) -> re.Pattern | None:
    regexes = [p[3:] for p in phrases if p.startswith("re:")]
    forms = {f for p in phrases if p.strip() and not p.startswith("re:") for f in plural_forms(p)}
    if not forms and not regexes:
        return None
    body = "|".join([*([_trie_regex(forms)] if forms else []), *(f"(?:{r})" for r in regexes)])
    return re.compile(rf"\b(?:{body})\b", re.IGNORECASE)


def _trie_regex(forms: set[str]) -> str:
    """One regex for many phrases, as a prefix tree ("ca(?:t|r)" for cat, car): Python's `re` tries
    the alternatives of a flat "cat|car|..." one by one at every position, which for a domain's
    thousand forms was most of a `data build`'s keyword stage. Longer phrases win (greedy), and a
    space matches any run of spaces or hyphens."""
    trie: dict = {}
    for form in forms:
        node = trie
        for ch in form:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        alts = [(r"[\s-]+" if ch == " " else re.escape(ch)) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if "" in node else body

    return emit(trie)


class Mask:
    """Negative phrases and regexes, each matched over the whole text on its own, so that one's
    match cannot hide another's ("a gingerbread cookie | shaped like a reindeer": the material and
    the likeness both count); `sub` blanks the union of their spans, like `re.Pattern.sub`."""

    def __init__(self, sources: list[str]):
        self.sources = sources  # regex sources: what crosses to `datasets.map` workers
        self.patterns = [re.compile(p, re.IGNORECASE) for p in sources]

    @classmethod
    def of(cls, phrases: list[str]) -> "Mask | None":
        plain = word_pattern([p for p in phrases if not p.startswith("re:")])
        regexes = [word_pattern([p]) for p in phrases if p.startswith("re:")]
        sources = [p.pattern for p in (plain, *regexes) if p is not None]
        return cls(sources) if sources else None

    def sub(self, repl: str, text: str) -> str:
        spans = sorted(m.span() for p in self.patterns for m in p.finditer(text) if m.end() > m.start())
        out, at = [], 0
        for start, end in spans:
            if end <= at:
                continue
            if start > at:
                out += [text[at:start], repl]
            elif not out:
                out.append(repl)
            at = end
        return "".join(out) + text[at:]


# Things that look like the domain's subject but are not it: "a toy fire truck", "a statue of a
# horse", "a cake shaped like a car", "a man in a hot dog costume". Matched spans are masked.
# What is depicted runs to the end of its noun phrase: up to six words, stopping at a word that
# places it somewhere ("a photo of a horse | hanging above the fireplace" keeps the fireplace) or
# at a verb with its object ("a toy train | circling the living room").
_PLACING = (r"on|in|at|above|below|beside|next|near|by|outside|inside|under|over|behind|against|hanging|sitting|"
            r"standing|leaning|lying|held|left|while|taped|pinned|stuck|hung|mounted|propped|"
            r"[\w'-]+ing\s+(?:the|a|an|his|her|their|its|some)")
_THING = rf"(?:,?\s+(?!(?:{_PLACING})\b)[\w'-]+){{1,6}}"
_FIGURES = r"statue|sculpture|figurine|carving"  # "a statue with a pigeon on its head" has a real pigeon
_IMAGES = (r"painting|drawing|sketch|illustration|poster|postcard|mural|print|"
           r"tattoo|sign|logo|billboard|ad|advertisement|screen|monitor|tv|television|cutout|menu|chalkboard|book|"
           r"magazine|cover|movie|film|show|documentary|video|calendar|puzzle|printed|painted|stencil|pattern|"
           r"wallpaper|snow\s+globe|game")
_SHOWING = (r"of|for|with|showing|displaying|advertising|reading|reads|saying|says|that\s+(?:says|reads)|listing|"
            r"about|featuring|depicting|pointing\s+to(?:ward)?")
DEPICTIONS = [
    rf"(?:toy(?!\s+(?:poodle|terrier|spaniel|schnauzer|breed)s?\b)|stuffed|plush|plastic|rubber|porcelain|ceramic|bronze|brass|marble|wax|clay|carved|origami|model|"
    rf"lego|inflatable|cartoon|fake|miniature|costumed|animatronic|remote[\s-]+control(?:led)?|rc){_THING}",
    rf"(?:{_FIGURES})s?\s+(?:of|depicting|showing){_THING}",
    rf"(?:(?!(?:an?|the)\s)[\w'-]+\s+){{0,2}}(?:{_IMAGES})s?\s+(?:{_SHOWING}){_THING}",  # "a street sign for ..."
    # "a framed photo of a car", "a phone that shows a picture of a cat"; a caption that *is* "a photo
    # of a dog" keeps its dog
    rf"(?:framed|holding|holds|show|showing|shows|displaying|with|open\s+to)\s+(?:an?\s+|the\s+)?(?:[\w'-]+\s+)?"
    rf"(?:photo|photograph|picture|image|selfie)s?\s+of{_THING}",
    rf"(?:shaped|decorated|made)\s+(?:like|to\s+look\s+like|as){_THING}",
    rf"(?:patterned|printed|decorated|embroidered|painted|stenciled|adorned)\s+with{_THING}",
    rf"(?:looks|look|dressed)\s+(?:like|as){_THING}",
    rf"(?:shape|form)\s+of{_THING}",
    rf"(?:listing|advertising){_THING}",
    r"(?:the\s+)?words?\s+[\"']?[\w'-]+",
    r"(?!(?:an?|the)\s)[\w'-]+(?:\s+[\w'-]+)?\s+(?:costume|suit|mascot|kite|statue|figurine|sculpture|carving|decal|sticker|ornament|"
    r"(?<!air\s)balloon|magnet|pattern|print|picture|logo|mask|jersey|tattoo|hat|cap|ears|feathers?|bookend|clock|"
    r"emblem|pinata|plushie|puppet|shaped|themed|patterned|sign|banner|decoy|slippers|jacket|shirt|sweater|hoodie|"
    r"wallpaper|trophy|video\s+game|character|face\s+paint|onesie|pajamas|pyjamas|duvet|bedspread|quilt|pillow|cushion|"
    r"towel|mug|mobile)s?(?!\s+(?:of|like)\b)",
    r"[\w'-]+(?:\s+[\w'-]+)?\s+(?:painted|printed|drawn|embroidered|stitched)\s+(?:on|in|onto|across|over)",
    rf"(?:no|without){_THING}",  # absent: "a bus stop with no bus in sight"
    r"(?:called|named)\s+(?:the\s+)?[\w'-]+(?:\s+[\w'-]+)?",  # a name: "a restaurant called ocean view"
]


def load_domain(name_or_path: str) -> Domain:
    """A shipped domain by name (configs/domains/<name>.yaml) or a YAML file of your own."""
    path = Path(name_or_path)
    if not path.suffix:
        path = DOMAIN_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            shipped = sorted(p.stem for p in DOMAIN_DIR.glob("*.yaml"))
            raise ConfigError(f"unknown domain {name_or_path!r}; shipped domains: {', '.join(shipped)} "
                              "(or give the path of a domain YAML file)")
    return load_config(Domain, path)


def domain_key(name_or_path: str) -> str:
    """How a dataset records the domain it was made for, so that `load_domain` finds it again from
    any working directory: a shipped name as it is, a YAML file of your own by its absolute path
    (its `name` may be taken, or shadow a shipped domain)."""
    return name_or_path if not Path(name_or_path).suffix else str(Path(name_or_path).expanduser().resolve())


def shipped_domains() -> list[str]:
    return sorted(p.stem for p in DOMAIN_DIR.glob("*.yaml"))
