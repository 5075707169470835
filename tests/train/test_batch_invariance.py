"""An embedding or a QL score does not depend on what it was batched with; on CUDA it matches the CPU."""

import numpy as np
import pytest

from llmql.export.runtime import OnnxEncoder, OnnxQLScorer
from llmql.train.encoder import Encoder
from llmql.train.ql_scorer import QLScorer

TEXTS = [
    "kelp",
    "granite ridge models improve results in the lagoon study",
    "amber",
    "the study of basalt and cobalt near the fjord shows more dune erosion than expected by the models",
    "violet willow",
    "naïve café 日本",
]


def encoders(tiny_llama, tiny_export):
    return {
        "torch": Encoder.from_pretrained(tiny_llama, bf16=False),
        "onnx": OnnxEncoder.from_dir(tiny_export),
    }


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_an_embedding_is_the_same_alone_and_in_any_batch(tiny_llama, tiny_export, runtime):
    encoder = encoders(tiny_llama, tiny_export)[runtime]
    alone = np.stack([encoder.encode_passages([t])[0] for t in TEXTS])
    for batch_size in (2, 3, len(TEXTS)):
        batched = encoder.encode_passages(TEXTS, batch_size=batch_size)
        np.testing.assert_allclose(batched, alone, atol=1e-5, rtol=0)
    shuffled = encoder.encode_passages(TEXTS[::-1], batch_size=4)[::-1]
    np.testing.assert_allclose(shuffled, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_a_ql_score_is_the_same_alone_and_in_any_batch(tiny_llama, tiny_export, runtime):
    scorer = (
        QLScorer.from_pretrained(tiny_llama, bf16=False) if runtime == "torch" else OnnxQLScorer.from_dir(tiny_export)
    )
    alone = np.array([scorer.score_states("kelp lagoon", scorer.end_states([t], batch_size=1))[0] for t in TEXTS])
    for batch_size in (2, 3, len(TEXTS)):
        states = scorer.end_states(TEXTS, batch_size=batch_size)
        np.testing.assert_allclose(scorer.score_states("kelp lagoon", states, batch_size=batch_size), alone, atol=1e-5)


@pytest.mark.cuda
def test_cuda_encoder_and_ql_scorer_match_the_cpu(tiny_llama):
    cpu = Encoder.from_pretrained(tiny_llama, bf16=False)
    gpu = Encoder.from_pretrained(tiny_llama, bf16=False, device="cuda")
    np.testing.assert_allclose(gpu.encode_passages(TEXTS), cpu.encode_passages(TEXTS), atol=1e-4)
    cpu_ql = QLScorer.from_pretrained(tiny_llama, bf16=False)
    gpu_ql = QLScorer.from_pretrained(tiny_llama, bf16=False, device="cuda:0")
    states = gpu_ql.end_states(TEXTS)
    np.testing.assert_allclose(gpu_ql.score_states("kelp", states), cpu_ql.score("kelp", TEXTS), atol=1e-3)
    np.testing.assert_allclose(gpu_ql.score("kelp", TEXTS), cpu_ql.score("kelp", TEXTS), atol=1e-3)
