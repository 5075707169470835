"""The validation split (held-out training claims, for every choice) and the views of the collection it needs."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from bench.quality.presets import Context


def held_out(query_ids, fraction: float) -> list[str]:
    """A fixed share of the query ids, by a hash of each id (stable across machines and runs)."""
    cut = fraction * 1000
    return sorted(q for q in query_ids if int(hashlib.sha256(q.encode()).hexdigest(), 16) % 1000 < cut)


def validation_ids(ctx: Context) -> Path:
    """The held-out training claims, never trained on; used for all tuning."""
    path = ctx.work / f"validation_ids-{ctx.protocol.validation_fraction:g}.txt"
    if path.is_file():
        return path
    from llmql.train.data import load_beir

    held = held_out(load_beir(ctx.data, "train").qrels, ctx.protocol.validation_fraction)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# training claims held out for validation (bench.quality split)\n" + "\n".join(held) + "\n")
    return path


def validation_beir(ctx: Context) -> Path:
    """A BEIR view whose 'validation' qrels are the held-out training claims (corpus and queries linked)."""
    root = ctx.work / f"validation-{ctx.protocol.validation_fraction:g}"
    if (root / "qrels" / "validation.tsv").is_file():
        return root
    from llmql.train.data import read_id_file

    held = read_id_file(validation_ids(ctx))
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).exists():
            (root / name).symlink_to(ctx.data.resolve() / name)
    lines = (ctx.data / "qrels" / "train.tsv").read_text().splitlines()
    rows = [lines[0]] + [ln for ln in lines[1:] if ln.split("\t")[0] in held]
    (root / "qrels" / "validation.tsv").write_text("\n".join(rows) + "\n")
    return root


def validation_corpus(ctx: Context) -> Path:
    """Held-out claims over their judged abstracts plus random others: cheap to encode, for tuning only."""
    P = ctx.protocol
    root = ctx.work / f"validation-slice-{P.validation_fraction:g}-{P.validation_extra_docs}"
    if (root / "corpus.jsonl").is_file():
        return root
    source = validation_beir(ctx)
    judged = {line.split("\t")[1] for line in (source / "qrels" / "validation.tsv").read_text().splitlines()[1:]}
    lines = (ctx.data / "corpus.jsonl").read_text().splitlines()
    ids = [json.loads(line)["_id"] for line in lines]
    rest = [i for i in ids if i not in judged]
    keep = judged | set(random.Random(0).sample(rest, min(len(rest), P.validation_extra_docs)))
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "qrels" / "validation.tsv").write_text((source / "qrels" / "validation.tsv").read_text())
    if not (root / "queries.jsonl").exists():
        (root / "queries.jsonl").symlink_to(ctx.data.resolve() / "queries.jsonl")
    tmp = root / "corpus.jsonl.tmp"
    tmp.write_text("\n".join(line for line, i in zip(lines, ids, strict=True) if i in keep) + "\n")
    tmp.rename(root / "corpus.jsonl")
    return root
