"""The device paths of the host path on a GPU, each against the CPU: bf16 weights, one batch for vectors and
[E] states, every candidate scored in one call, the memory engine's kNN on the device, a sync into it."""

import numpy as np
import pytest
import torch

from llmql.train.core.text_encoder import encode_documents
from llmql.train.encoder import Encoder
from llmql.train.ql_scorer import QLScorer

pytestmark = pytest.mark.cuda
TEXTS = ["kelp lagoon study", "granite ridge models improve results " * 8, "amber", "basalt and cobalt near the fjord"]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_bf16_weights_one_batch_and_one_scoring_call_match_the_cpu(tiny_llama):
    cpu, cpu_ql = Encoder.from_pretrained(tiny_llama, bf16=False), QLScorer.from_pretrained(tiny_llama, bf16=False)
    gpu, gpu_ql = (
        Encoder.from_pretrained(tiny_llama, device="cuda"),
        QLScorer.from_pretrained(tiny_llama, device="cuda"),
    )
    assert next(gpu.model.parameters()).dtype == torch.bfloat16 and gpu.bf16 is False  # bf16 weights, no autocast
    rows = cpu.tokenizer.passages([""] * len(TEXTS), TEXTS)
    vectors, states = encode_documents(gpu, gpu_ql, rows, batch_size=3, max_padded_tokens=4096)
    assert cosine(vectors, cpu.encode_ids(rows)).min() > 0.99
    reference = cpu_ql.end_states(TEXTS)
    np.testing.assert_allclose(states.hidden, reference.hidden, atol=0.1, rtol=0.05)
    many = states.take(np.arange(200) % len(TEXTS))  # 200 candidates in one call
    scores = gpu_ql.score_states("kelp lagoon", many)
    np.testing.assert_allclose(scores[: len(TEXTS)], cpu_ql.score_states("kelp lagoon", reference), atol=0.5)
    np.testing.assert_allclose(scores, scores[np.arange(200) % len(TEXTS)], atol=1e-3)  # same state, same score


def test_the_memory_engine_searches_on_the_device_as_on_the_cpu(tiny_llama, toy_beir, tmp_path):
    from llmql.connectors.registry import open_backend
    from llmql.connectors.sync import SyncConfig, sync

    cfg = SyncConfig(corpus=str(toy_beir), model=str(tiny_llama), backend="memory", url=str(tmp_path / "m"), index="d")
    assert sync(SyncConfig(**{**cfg.__dict__, "runtime": "torch", "device": "cuda"}), progress=False).ok
    gpu = open_backend("memory", str(tmp_path / "m"), device="cuda")
    vector = gpu.fetch("d", ["d0"], with_vector=True)["d0"].vector
    cpu_hits = [
        (h.id, round(h.score, 4))
        for h in open_backend("memory", str(tmp_path / "m"), device="cpu").knn("d", vector, 10)
    ]
    assert [(h.id, round(h.score, 4)) for h in gpu.knn("d", vector, 10)] == cpu_hits
