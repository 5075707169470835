"""Each exported graph run at shapes its trace never saw, against the PyTorch function it was traced from.

A trace freezes any Python control flow over a tensor's size (a loop over chunks, a branch on a length): such a
graph answers at the dummy input's shape and fails, or answers wrongly, at others. The parity checks in
`llmql.export.convert` run real passages in the runtime's batches, which can stay inside the traced size; these
checks call the graphs directly at the shapes that catch it: one row, the longest passage and query the
configuration allows, a batch 4x the dummy's, and a call of more rows x tokens than the runtime passes at once.
A graph that fails or disagrees at any of them is refused (`ShapeError`), and the shapes checked are recorded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from llmql.export.validate import ParityError
from llmql.train.core.batching import pad
from llmql.train.core.ql_base import LOGITS_AT_ONCE
from llmql.train.core.tokenization import PromptTokenizer
from llmql.train.modeling import BiEncoder, EndStateTensors, compute_end_states, query_logprobs_from_states

DUMMY_ROWS = 2  # what `llmql.export.onnx_config.dummy_inputs` traces with: 2 rows (12 tokens; 5 query tokens)
MANY_ROWS = 32  # a sequence batch far past the dummy's
MAX_QUERY_CALL_ROWS = 4096  # candidate x token rows of the largest query call checked (where the bound allows more)
LONG = " ".join(["long"] * 5000)  # far past any token budget: cut to the longest row the configuration allows


class ShapeError(ParityError):
    """An exported graph fails, or disagrees with PyTorch, at a shape other than the one it was traced with."""


@dataclass(frozen=True)
class Case:
    name: str
    rows: int
    tokens: int


def _floor_rows(rows: list[list[int]], count: int) -> list[list[int]]:
    return [rows[i % len(rows)] for i in range(count)]


def sequence_cases(prompt: PromptTokenizer, passages: list[tuple[str, str]]) -> dict[str, list[list[int]]]:
    """Token rows for the encoder and QL document graphs, by case: each row ends in [E] (the graphs' contract)."""
    real = prompt.passages([t for t, _ in passages], [x for _, x in passages])
    longest = prompt.passages([""], [LONG])[0]
    return {
        "one row, the longest passage": [longest],
        "one row, the longest query": prompt.queries([LONG]),
        f"{4 * DUMMY_ROWS} rows (4x the trace's), mixed lengths": _floor_rows([longest, *real], 4 * DUMMY_ROWS),
        f"{MANY_ROWS} rows, mixed lengths": _floor_rows([*real, longest], MANY_ROWS),
    }


def query_cases(prompt: PromptTokenizer, vocab_size: int) -> list[tuple[str, int, list[int]]]:
    """(case, candidates, query ids) for the QL query graph: one candidate with the longest query, 4x the
    trace's candidates, and a call of more candidate x token rows than a runtime call may hold for this
    vocabulary (`LOGITS_AT_ONCE`; at most MAX_QUERY_CALL_ROWS)."""
    longest = prompt.ql_queries([LONG])[0]
    short = [*longest[:11], prompt.config.end_token_id]
    tokens = min(30, len(longest))
    query = [*longest[: tokens - 1], prompt.config.end_token_id]
    rows = min(LOGITS_AT_ONCE // vocab_size + 1, MAX_QUERY_CALL_ROWS)
    return [
        ("one candidate, the longest query", 1, longest),
        (f"{4 * DUMMY_ROWS} candidates (4x the trace's)", 4 * DUMMY_ROWS, short),
        (f"{-(-rows // tokens)} candidates x {tokens} tokens", -(-rows // tokens), query),
    ]


def _run(session, feeds: dict, graph: str, case: str, shape: tuple[int, int]) -> list[np.ndarray]:
    try:
        return session.run(None, feeds)
    except Exception as err:  # onnxruntime raises its own exception types, one per failure kind
        raise ShapeError(
            f"{graph}: fails at {shape[0]} x {shape[1]} ({case}), a shape its trace did not see: {err}; export refused"
        ) from None


def _worst_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(((a * b).sum(axis=1) / norms).min())


def check_encoder(
    session, encoder: BiEncoder, cases: dict[str, list[list[int]]], pad_id: int, floor: float, graph: str
) -> list[dict]:
    """The embedding graph against the `BiEncoder` it was traced from, at every case; the mixed-length batches
    left-padded (the trace's dummy pads one row on the left)."""
    checked = []
    for case, rows in cases.items():
        ids, mask = pad(rows, pad_id, "left" if len(rows) > 1 else "right")
        (vectors,) = _run(session, {"input_ids": ids, "attention_mask": mask}, graph, case, ids.shape)
        with torch.inference_mode():
            reference = encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        checked.append(_verdict(graph, case, ids.shape, _worst_cosine(vectors, reference), floor))
    return checked


def check_document(session, lm, cases: dict[str, list[list[int]]], pad_id: int, floor: float, graph: str) -> list[dict]:
    """The QL document graph against `compute_end_states`: [E]'s keys, values and hidden state, and its position."""
    checked = []
    for case, rows in cases.items():
        ids, mask = pad(rows, pad_id)
        feeds = {"input_ids": ids, "attention_mask": mask}
        keys, values, hidden, positions = _run(session, feeds, graph, case, ids.shape)
        with torch.inference_mode():
            ref = compute_end_states(lm, torch.from_numpy(ids), torch.from_numpy(mask))
        pairs = ((keys, ref.keys), (values, ref.values), (hidden, ref.hidden))
        worst = min(_worst_cosine(ours, theirs.numpy()) for ours, theirs in pairs)
        if not np.array_equal(positions, ref.positions.numpy()):
            worst = -1.0  # a wrong [E] position is wrong whatever the states
        checked.append(_verdict(graph, case, ids.shape, worst, floor))
    return checked


def check_query(session, lm, states: EndStateTensors, cases: list, max_rel_diff: float, graph: str) -> list[dict]:
    """The QL query graph against `query_logprobs_from_states` on real documents' [E] states (repeated to the
    case's candidates): the relative difference of each candidate's summed log-probability."""
    checked = []
    for case, candidates, query in cases:
        take = torch.arange(candidates) % len(states.positions)
        part = EndStateTensors(*(t[take] for t in (states.keys, states.values, states.hidden, states.positions)))
        ids = torch.tensor([query] * candidates, dtype=torch.long)
        feeds = {
            "input_ids": ids.numpy(),
            "end_keys": part.keys.numpy(),
            "end_values": part.values.numpy(),
            "end_hidden": part.hidden.numpy(),
            "end_position": part.positions.numpy(),
        }
        (logprobs,) = _run(session, feeds, graph, case, tuple(ids.shape))
        with torch.inference_mode():
            reference = query_logprobs_from_states(lm, ids, part).double().sum(dim=1).numpy()
        diff = np.abs(logprobs.astype(np.float64).sum(axis=1) - reference) / np.maximum(1.0, np.abs(reference))
        checked.append(_verdict(graph, case, tuple(ids.shape), float(diff.max()), max_rel_diff, lower_is_better=True))
    return checked


def _verdict(graph: str, case: str, shape, figure: float, bar: float, lower_is_better: bool = False) -> dict:
    ok = figure <= bar if lower_is_better else figure >= bar
    name = "max_rel_logprob_diff" if lower_is_better else "worst_cosine"
    if not ok:
        raise ShapeError(
            f"{graph}: at {shape[0]} x {shape[1]} ({case}), a shape its trace did not see, {name} to PyTorch is "
            f"{figure:.3e}, {'above' if lower_is_better else 'below'} the bar {bar}; export refused"
        )
    return {**asdict(Case(case, int(shape[0]), int(shape[1]))), name: figure}
