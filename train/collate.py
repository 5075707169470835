"""Training examples and their collation into padded tensors, for both stages."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from llmql.train.batching import pad
from llmql.train.data import Doc, TrainGroup
from llmql.train.tokenization import Corruption, PromptTokenizer


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


def collate_ql(items: list[dict[str, list[int]]], pad_id: int, loss_on: str = "query") -> dict[str, torch.Tensor]:
    """Right-padded `passage [E] query <eos>` rows with each row's own [E] position and its target tokens.

    loss_on="query": targets are the query tokens and the closing EOS (the paper);
    loss_on="all": every token after the first, document included (the reference code).
    """
    rows = [it["passage"] + it["query"] for it in items]
    ids, mask = pad(rows, pad_id)
    ends = np.array([len(it["passage"]) - 1 for it in items])
    target = mask.copy()
    for r, it in enumerate(items):
        target[r, : (len(it["passage"]) if loss_on == "query" else 1)] = 0
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


def collate_contrastive(items: list[dict[str, list]], pad_id: int) -> dict[str, torch.Tensor]:
    """Queries [Q, Lq] and passages [Q * group, Lp], the passages of query k at rows k*group ... (k+1)*group-1."""
    q_ids, q_mask = pad([it["query"] for it in items], pad_id)
    p_ids, p_mask = pad([p for it in items for p in it["passages"]], pad_id)
    return {
        "query_ids": torch.from_numpy(q_ids),
        "query_mask": torch.from_numpy(q_mask),
        "passage_ids": torch.from_numpy(p_ids),
        "passage_mask": torch.from_numpy(p_mask),
    }
