"""The paper's prompt templates and the string-level Input Corruption.

Kept free of torch and tokenizers so that every stage (training, ONNX runtime, sync) formats text identically.
"""

from __future__ import annotations

import numpy as np

# LLM-QL / RepLLaMA-style instructions (arXiv 2504.05216). The passage prompt is shared by stage 1 (followed by
# [E] and the query) and by stage 2 (followed by [E], whose final state is the embedding).
PASSAGE_TEMPLATE = "Instruct: Given a retrieved passage, summarize the passage.\nPassage: {body}\nSummarization:"
QUERY_TEMPLATE = (
    "Instruct: Given a web search query, retrieve the most relevant passage that answer the query.\n"
    "Query: {body}\nThe most relevant passage:"
)
MASK_WORD = "_"


def passage_body(title: str, text: str) -> str:
    """`{title} {text}` as the paper writes it, without a dangling space when the title is empty."""
    title, text = title.strip(), text.strip()
    return f"{title} {text}" if title else text


def split_template(template: str) -> tuple[str, str]:
    """Split a template at `{body}`; trailing spaces of the prefix move into the body so BPE merges stay natural."""
    if template.count("{body}") != 1:
        raise ValueError(f"a prompt template needs exactly one '{{body}}' placeholder: {template!r}")
    prefix, suffix = template.split("{body}")
    return prefix, suffix


def corrupt_words(body: str, prob: float, rng: np.random.Generator) -> str:
    """Input Corruption: each whitespace-separated word becomes `_` with probability `prob`.

    Applied to the document body only, so prompt words are never touched.
    """
    if prob <= 0.0:
        return body
    words = body.split()
    if not words:
        return body
    drop = rng.random(len(words)) < prob
    return " ".join(MASK_WORD if d else w for w, d in zip(words, drop, strict=True))
