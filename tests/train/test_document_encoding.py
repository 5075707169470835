"""One tokenisation and one padded batch for a document's vector and its [E] states, equal to encoding each
alone; the tokeniser cuts long documents by their kept tokens."""

import numpy as np
import pytest

from llmql.export.runtime import OnnxEncoder, OnnxQLScorer
from llmql.train.core.text_encoder import encode_documents
from llmql.train.encoder import Encoder
from llmql.train.ql_scorer import QLScorer

TITLES = ["amber", "", "kelp notes", "granite"]
TEXTS = ["kelp kelp lagoon study", "granite ridge models " * 30, "amber", "the field data shows new results"]


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_vectors_and_states_from_one_batch_equal_each_alone(tiny_export, tiny_llama, runtime):
    if runtime == "onnx":
        encoder, scorer = OnnxEncoder.from_dir(tiny_export), OnnxQLScorer.from_dir(tiny_export)
    else:
        encoder, scorer = (
            Encoder.from_pretrained(tiny_llama, bf16=False),
            QLScorer.from_pretrained(tiny_llama, bf16=False),
        )
    rows = encoder.tokenizer.passages(TITLES, TEXTS)
    vectors, states = encode_documents(encoder, scorer, rows, batch_size=3, max_padded_tokens=64)
    np.testing.assert_allclose(vectors, encoder.encode_passages(TEXTS, TITLES, batch_size=1), atol=1e-5)
    alone = scorer.end_states(TEXTS, TITLES, batch_size=1)
    for name in ("keys", "values", "hidden"):
        np.testing.assert_allclose(getattr(states, name), getattr(alone, name), atol=1e-5)
    assert states.positions.tolist() == alone.positions.tolist()
    assert encode_documents(encoder, None, rows)[1] is None


def test_the_scorer_and_the_encoder_must_read_passages_alike(tiny_export, other_export):
    encoder = OnnxEncoder.from_dir(tiny_export)
    scorer = OnnxQLScorer.from_dir(tiny_export)
    other = OnnxEncoder.from_dir(other_export)
    if other.config.prompts == encoder.config.prompts and other.config.pad_token_id == encoder.config.pad_token_id:
        pytest.skip("the two tiny models read passages alike")
    with pytest.raises(ValueError, match="read passages differently"):
        encode_documents(other, scorer, encoder.tokenizer.passages([""], ["kelp"]))
