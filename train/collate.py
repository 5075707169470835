"""Training examples and their collation into padded tensors, for both stages."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from llmql.train.core.batching import pad
from llmql.train.core.tokenization import Corruption, PromptTokenizer
from llmql.train.data import Doc, TrainGroup


class EpochDataset(Dataset):
    """Examples whose random draws depend on (seed, epoch, index): fresh each epoch, identical after a resume."""

    def __init__(self, seed: int):
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])


class QLExamples(EpochDataset):
    """(query, document) pairs; the document is corrupted anew every time it is served."""

    def __init__(self, pairs: Sequence[tuple[str, Doc]], tokenizer: PromptTokenizer, corruption: Corruption, seed: int):
        super().__init__(seed)
        self.pairs = list(pairs)
        self.tokenizer = tokenizer
        self.corruption = corruption

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        query, doc = self.pairs[index]
        passage = self.tokenizer.passages([doc.title], [doc.text], self.corruption, self.rng(index))[0]
        return {"passage": passage, "query": self.tokenizer.ql_queries([query])[0]}


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Example indices grouped into rows of at most `capacity` tokens (first fit, longest first); an example
    longer than `capacity` is a row of its own."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        place = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if place is None:
            rows.append([i])
            room.append(capacity - lengths[i])
        else:
            rows[place].append(i)
            room[place] -= lengths[i]
    return rows


def packed(sequences: Sequence[Sequence[int]], pad_id: int, capacity: int) -> dict[str, np.ndarray]:
    """Sequences packed into right-padded rows: input_ids and attention_mask, each token's example (its index in
    `sequences`, -1 for padding), position_ids restarting at every example, and `last` [N, 2], the row and
    column of each sequence's final token, in sequence order."""
    rows = pack_rows([len(s) for s in sequences], capacity)
    width = max((sum(len(sequences[i]) for i in row) for row in rows), default=0)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    examples = np.full((len(rows), width), -1, dtype=np.int64)
    positions = np.zeros((len(rows), width), dtype=np.int64)
    last = np.zeros((len(sequences), 2), dtype=np.int64)
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            n = len(sequences[i])
            ids[r, start : start + n] = sequences[i]
            examples[r, start : start + n] = i
            positions[r, start : start + n] = np.arange(n)
            last[i] = (r, start + n - 1)
            start += n
    mask = (examples >= 0).astype(np.int64)
    return {"input_ids": ids, "attention_mask": mask, "examples": examples, "position_ids": positions, "last": last}


def collate_ql(
    items: list[dict[str, list[int]]], pad_id: int, loss_on: str = "query", pack_tokens: int | None = None
) -> dict[str, torch.Tensor]:
    """Right-padded `passage [E] query <eos>` rows with each row's own [E] position and its target tokens; with
    `pack_tokens`, several examples a row of at most that many tokens (`packed`), each with its [E] position.

    loss_on="query": targets are the query tokens and the closing EOS (the paper);
    loss_on="all": every token after the first, document included (the reference code).
    """
    rows = [it["passage"] + it["query"] for it in items]
    skip = [len(it["passage"]) if loss_on == "query" else 1 for it in items]  # leading tokens that are no target
    if pack_tokens is not None:
        batch = packed(rows, pad_id, pack_tokens)
        examples, positions = batch["examples"], batch["position_ids"]
        start = np.where(examples >= 0, np.arange(examples.shape[1])[None, :] - positions, 0)  # each example's start
        end_of = np.array([len(it["passage"]) - 1 for it in items] + [0])  # [E] within each example (-1: padding)
        batch["ends"] = start + end_of[examples]
        target = batch["attention_mask"].copy()
        target[positions < np.array([*skip, 0])[examples]] = 0
        del batch["last"]
        return {**{k: torch.from_numpy(v) for k, v in batch.items()}, "target_mask": torch.from_numpy(target)}
    ids, mask = pad(rows, pad_id)
    ends = np.array([len(it["passage"]) - 1 for it in items])
    target = mask.copy()
    for r, n in enumerate(skip):
        target[r, :n] = 0
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "end_positions": torch.from_numpy(ends),
        "target_mask": torch.from_numpy(target),
    }


class ContrastiveExamples(EpochDataset):
    """A query with one sampled positive and `group_size - 1` sampled hard negatives."""

    def __init__(self, groups: Sequence[TrainGroup], tokenizer: PromptTokenizer, group_size: int, seed: int):
        super().__init__(seed)
        if group_size > 1 and any(not g.negatives for g in groups):
            missing = next(g.query_id for g in groups if not g.negatives)
            raise ValueError(f"query {missing!r} has no negatives but group_size={group_size} needs them")
        self.groups = list(groups)
        self.tokenizer = tokenizer
        self.group_size = group_size

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict[str, list]:
        g, rng = self.groups[index], self.rng(index)
        positive = g.positives[rng.integers(len(g.positives))]
        n = self.group_size - 1
        picks = rng.choice(len(g.negatives), size=n, replace=len(g.negatives) < n) if n else []
        docs = [positive, *(g.negatives[i] for i in picks)]
        return {
            "query": self.tokenizer.queries([g.query])[0],
            "passages": self.tokenizer.passages([d.title for d in docs], [d.text for d in docs]),
        }


def collate_contrastive(
    items: list[dict[str, list]], pad_id: int, pack_tokens: int | None = None
) -> dict[str, torch.Tensor]:
    """Queries [Q, Lq] and passages [Q * group, Lp], the passages of query k at rows k*group ... (k+1)*group-1;
    with `pack_tokens`, each side packed (`packed`) with its `*_examples`, `*_positions` and `*_last`."""
    queries = [it["query"] for it in items]
    passages = [p for it in items for p in it["passages"]]
    if pack_tokens is None:
        q_ids, q_mask = pad(queries, pad_id)
        p_ids, p_mask = pad(passages, pad_id)
        return {
            "query_ids": torch.from_numpy(q_ids),
            "query_mask": torch.from_numpy(q_mask),
            "passage_ids": torch.from_numpy(p_ids),
            "passage_mask": torch.from_numpy(p_mask),
        }
    out = {}
    for side, sequences in (("query", queries), ("passage", passages)):
        batch = packed(sequences, pad_id, pack_tokens)
        out |= {
            f"{side}_ids": batch["input_ids"],
            f"{side}_mask": batch["attention_mask"],
            f"{side}_examples": batch["examples"],
            f"{side}_positions": batch["position_ids"],
            f"{side}_last": batch["last"],
        }
    return {k: torch.from_numpy(v) for k, v in out.items()}


def ql_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens a stage-1 batch trains on (padding excluded): what the throughput figures count."""
    return int(batch["attention_mask"].sum())


def contrastive_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens a stage-2 batch trains on, both towers (padding excluded)."""
    return int(batch["query_mask"].sum() + batch["passage_mask"].sum())
