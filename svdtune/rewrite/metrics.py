"""How good a set of rewrites is: against the reference rewrite, the user's words and the domain."""

from __future__ import annotations

import statistics

from svdtune.rewrite.terms import content_words, has_style, missing_words, style_terms


def rewrite_scores(plains: list[str], rewrites: list[str], references: list[str], style_suffixes: list[str]) -> dict:
    """chrF (corpus, 0-100) against the references; content-word retention (% of the plain
    prompts' content words kept), exact retention (% of rewrites that keep all of them), style-term
    rate (% of rewrites with a style term of their domain), mean length in words."""
    from torchmetrics.functional.text import chrf_score

    kept = total = exact = 0
    for plain, rewrite in zip(plains, rewrites, strict=True):
        n_content, n_missing = len(content_words(plain)), len(missing_words(plain, rewrite))
        kept, total, exact = kept + n_content - n_missing, total + n_content, exact + (n_missing == 0)
    styled = sum(has_style(r, style_terms(s)) for r, s in zip(rewrites, style_suffixes, strict=True))
    n = max(len(rewrites), 1)
    return {
        "chrf": 100 * float(chrf_score(rewrites, [[r] for r in references], n_word_order=0)),  # chrF, not chrF++
        "retention": 100 * kept / max(total, 1),
        "exact_retention": 100 * exact / n,
        "style_rate": 100 * styled / n,
        "mean_words": statistics.fmean(len(r.split()) for r in rewrites) if rewrites else 0.0,
        "n": len(rewrites),
    }


def score_rewriter(rewriter, pairs) -> dict:
    """`rewrite_scores` of a Rewriter's greedy answers (raw, before guardrails) to a pairs dataset
    (columns domain, plain, styled), with one example answer."""
    from svdtune.data.domains import load_domain

    domains = {d: load_domain(d) for d in set(pairs["domain"])}
    answers = rewriter.generate(pairs["plain"], [domains[d] for d in pairs["domain"]], "greedy")
    suffixes = [domains[d].style_suffix for d in pairs["domain"]]
    return rewrite_scores(pairs["plain"], answers, pairs["styled"], suffixes) | {"example": answers[0] if answers else ""}
