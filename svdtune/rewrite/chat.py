"""How a rewrite request is put to the LLM: an instruction naming the domain, then the user's prompt.

The model's own chat template is used (SmolLM2's ChatML here); a base model without one gets a
plain "Instruction / Prompt / Rewrite" layout. The instruction quotes the domain's style terms, so
one rewriter serves several domains and a domain it never saw still gets its terms asked for.
"""

from __future__ import annotations

from svdtune.data.domains import Domain

IGNORE = -100  # label of tokens the loss skips (the instruction and the user's prompt)


def instruction(domain: Domain) -> str:
    style = domain.style_suffix.strip().lstrip(",").strip()
    return (f"Rewrite the image prompt in the {domain.name} style ({style}). Keep every object, colour and "
            "number it names and add detail. Answer with the prompt only.")


def render(tokenizer, domain: Domain, plain: str, styled: str | None = None) -> str:
    """The conversation as text: up to the start of the answer, or with `styled` as the answer."""
    if tokenizer.chat_template:
        messages = [{"role": "system", "content": instruction(domain)}, {"role": "user", "content": plain}]
        if styled is None:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": styled}], tokenize=False)
    text = f"Instruction: {instruction(domain)}\nPrompt: {plain}\nRewrite:"
    return text if styled is None else f"{text} {styled}{tokenizer.eos_token}"


def encode_pair(tokenizer, domain: Domain, plain: str, styled: str) -> dict[str, list[int]]:
    """Token ids of the whole conversation and labels that score the answer only."""
    question = tokenizer(render(tokenizer, domain, plain), add_special_tokens=False).input_ids
    ids = tokenizer(render(tokenizer, domain, plain, styled), add_special_tokens=False).input_ids
    if ids[:len(question)] != question:  # a template that re-tokenizes across the boundary
        raise ValueError(f"the chat template of {tokenizer.name_or_path!r} does not keep the question as a "
                         "prefix of the conversation; response-only labels cannot be placed")
    return {"input_ids": ids, "labels": [IGNORE] * len(question) + ids[len(question):]}
