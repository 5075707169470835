"""A small synthetic collection in BEIR layout, learnable by a tiny model in a few dozen steps.

Each document is about one made-up topic word; its queries reuse that word. Nothing here comes from a hub.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = [
    "amber",
    "basalt",
    "cobalt",
    "dune",
    "ember",
    "fjord",
    "granite",
    "harbor",
    "indigo",
    "jasper",
    "kelp",
    "lagoon",
    "marble",
    "nectar",
    "obsidian",
    "prairie",
    "quartz",
    "ridge",
    "saffron",
    "tundra",
    "umber",
    "violet",
    "willow",
    "zephyr",
]
FILLER = [
    "the",
    "study",
    "shows",
    "that",
    "a",
    "new",
    "method",
    "improves",
    "results",
    "in",
    "many",
    "cases",
    "with",
    "strong",
    "evidence",
    "from",
    "field",
    "data",
    "and",
    "models",
]


def toy_text(seed: int = 0) -> list[str]:
    """Sentences covering every word the toy collection uses (for training a tiny BPE)."""
    rng = random.Random(seed)
    lines = []
    for topic in TOPICS:
        for _ in range(8):
            words = [*rng.sample(FILLER, 8), topic, topic]
            rng.shuffle(words)
            lines.append(" ".join(words))
    lines.append("Instruct: Given a retrieved passage, summarize the passage.\nPassage: x\nSummarization:")
    lines.append("Instruct: Given a web search query, retrieve the most relevant passage that answer the query.")
    lines.append("Query: x\nThe most relevant passage: _ é ü 日本 naïve café")
    return lines


def write_toy_beir(root: Path, seed: int = 0) -> Path:
    """corpus.jsonl (one document per topic), queries (3 train + 1 test per topic), qrels/train|test.tsv."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    with (root / "corpus.jsonl").open("w") as f:
        for i, topic in enumerate(TOPICS):
            text = " ".join([*rng.sample(FILLER, 10), topic, topic, topic])
            f.write(json.dumps({"_id": f"d{i}", "title": f"{topic} report", "text": text}) + "\n")
    train_rows, test_rows = [], []
    with (root / "queries.jsonl").open("w") as f:
        for i, topic in enumerate(TOPICS):
            for k in range(4):
                qid = f"q{i}-{k}"
                words = [*rng.sample(FILLER, 3), topic]
                rng.shuffle(words)
                f.write(json.dumps({"_id": qid, "text": " ".join(words)}) + "\n")
                (test_rows if k == 3 else train_rows).append(f"{qid}\td{i}\t1")
    header = "query-id\tcorpus-id\tscore\n"
    (root / "qrels" / "train.tsv").write_text(header + "\n".join(train_rows) + "\n")
    (root / "qrels" / "test.tsv").write_text(header + "\n".join(test_rows) + "\n")
    return root


def big_corpus(path: Path, n: int) -> Path:
    """`n` short synthetic notes (ids doc00000...) in corpus.jsonl form, for sync tests that need many batches."""
    rng = random.Random(1)
    with path.open("w") as handle:
        for i in range(n):
            words = [*rng.sample(FILLER, 6), rng.choice(TOPICS), rng.choice(TOPICS)]
            handle.write(json.dumps({"_id": f"doc{i:05d}", "title": f"note {i}", "text": " ".join(words)}) + "\n")
    return path
