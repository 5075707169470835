"""Chunking time against a document's length: one document of N words cut into passages, as a sync does it.

    .venv/bin/python -m bench.chunk_scaling --model EXPORT [--words 25000 50000 100000 200000 800000]

Times the passage spans (`PromptTokenizer.chunk_spans`), the passage texts and their tokenisation for one
document of each length, median of 3, and a document of 5 MB; writes bench/results/chunk_scaling.json. Linear
time means seconds per word stays flat as the length grows (it was quadratic: 200,000 words took 54 s).
"""

from __future__ import annotations

import argparse
import time

from bench.common import median, write_results

WORDS = ["granite", "ridge", "kelp", "lagoon", "amber", "study", "basalt", "note", "cold", "water"]


def chunk_seconds(tokenizer, text: str, tokens: int, overlap: int) -> tuple[float, int]:
    from llmql.train.core.chunking import Chunking, passage_parts

    start = time.perf_counter()
    spans = tokenizer.chunk_spans(["Title"], [text], Chunking(tokens, overlap))[0]
    parts = passage_parts("Title", text, spans)
    tokenizer.passages([t for t, _ in parts], [x for _, x in parts])
    return time.perf_counter() - start, len(spans)


def main() -> None:
    from llmql.train.core.tokenization import PromptTokenizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an export (its tokenizer.json and llmql.json)")
    parser.add_argument("--words", type=int, nargs="+", default=[25_000, 50_000, 100_000, 200_000, 800_000])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--overlap", type=int, default=8)
    args = parser.parse_args()
    tokenizer = PromptTokenizer.from_dir(args.model)
    rows = []
    texts = [(f"{n} words", " ".join(WORDS[i % len(WORDS)] for i in range(n))) for n in args.words]
    mb5 = " ".join(WORDS[i % len(WORDS)] for i in range(5_000_000 // 6))[:5_000_000]
    for label, text in [*texts, ("5 MB", mb5)]:
        runs = [chunk_seconds(tokenizer, text, args.tokens, args.overlap) for _ in range(3)]
        seconds = median([s for s, _ in runs])
        words = len(text.split())
        rows.append(
            {
                "document": label,
                "words": words,
                "bytes": len(text.encode()),
                "passages": runs[0][1],
                "seconds": seconds,
                "us_per_word": seconds / words * 1e6,
            }
        )
        print(
            f"{label:>14}  {words:>9} words  {runs[0][1]:>6} passages  {seconds:7.2f} s  "
            f"{rows[-1]['us_per_word']:.2f} us/word"
        )
    write_results("chunk_scaling", {"model": args.model, "tokens": args.tokens, "overlap": args.overlap, "rows": rows})


if __name__ == "__main__":
    main()
