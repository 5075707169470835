"""End-to-end training on the toy collection with a tiny random Llama (seconds, CPU)."""

import json

import numpy as np
import pytest
import torch

from llmql.train.core.config import (
    CONFIG_NAME,
    ContrastiveTrainConfig,
    LoraSettings,
    OptimConfig,
    PromptConfig,
    QLTrainConfig,
)
from llmql.train.core.errors import LLMQLError
from llmql.train.data import load_beir
from llmql.train.encoder import Encoder
from llmql.train.ql_scorer import QLScorer
from llmql.train.run import train_contrastive, train_ql

# Short prompts let a 2-layer, 32-wide model learn the toy task in a few dozen steps.
SHORT = PromptConfig(passage="passage: {body}", query="query: {body}")


def mrr(encoder: Encoder, beir) -> float:
    data = load_beir(beir, "test")
    ids = list(data.corpus)
    passages = encoder.encode_passages([data.corpus[i].text for i in ids], [data.corpus[i].title for i in ids])
    qids = list(data.qrels)
    scores = encoder.encode_queries([data.queries[q] for q in qids]) @ passages.T
    ranks = [
        next(r for r, j in enumerate(np.argsort(-s)) if ids[j] in data.qrels[q])
        for q, s in zip(qids, scores, strict=True)
    ]
    return float(np.mean([1.0 / (r + 1) for r in ranks]))


def optim(steps: int, lr: float, **kw) -> OptimConfig:
    return OptimConfig(learning_rate=lr, max_steps=steps, warmup_steps=3, bf16=False, batch_size=8, **kw)


@pytest.fixture(scope="module")
def trained(tiny_llama, toy_beir, tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    stage1 = train_ql(
        QLTrainConfig(
            model=str(tiny_llama), data=str(toy_beir), out=str(root / "ql"), prompts=SHORT, optim=optim(10, 1e-3)
        )
    )
    stage2 = train_contrastive(
        ContrastiveTrainConfig(
            model=str(stage1),
            data=str(toy_beir),
            out=str(root / "cl"),
            group_size=4,
            temperature=0.1,
            prompts=SHORT,
            lora=LoraSettings(r=8, alpha=16, dropout=0.0),
            merge=True,
            optim=optim(80, 3e-3),
        )
    )
    return stage1, stage2


def test_trained_retriever_beats_the_untrained_model(trained, tiny_llama, toy_beir):
    from dataclasses import replace

    _, stage2 = trained
    untrained = Encoder.from_pretrained(tiny_llama, bf16=False)
    untrained.tokenizer.config = replace(untrained.tokenizer.config, prompts=SHORT)
    untrained.tokenizer.__init__(untrained.tokenizer.tokenizer, untrained.tokenizer.config)
    before, after = mrr(untrained, toy_beir), mrr(Encoder.from_pretrained(stage2, bf16=False), toy_beir)
    chance = float(np.mean([1.0 / r for r in range(1, 25)]))
    assert after > 0.45 > chance + 0.25  # measured 0.64-0.78 over four seeds
    assert after > before + 0.15


def test_output_directories_describe_themselves(trained):
    _, stage2 = trained
    meta = json.loads((stage2 / CONFIG_NAME).read_text())
    assert meta["model"]["adapter"] == "adapter"
    assert [s["stage"] for s in meta["training"]] == ["QLTrainConfig", "ContrastiveTrainConfig"]
    assert meta["model"]["prompts"]["passage"] == SHORT.passage
    assert (stage2 / "negatives.jsonl").is_file() and not (stage2 / "checkpoints").exists()


def test_saved_model_reloads_to_identical_embeddings(trained):
    _, stage2 = trained
    texts = ["kelp kelp lagoon", "amber study"]
    a = Encoder.from_pretrained(stage2, bf16=False).encode_passages(texts)
    b = Encoder.from_pretrained(stage2, bf16=False).encode_passages(texts)
    merged = Encoder.from_pretrained(stage2 / "merged", bf16=False).encode_passages(texts)
    assert np.array_equal(a, b)
    np.testing.assert_allclose(merged, a, atol=1e-5)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_one_directory_is_retriever_and_ql_scorer(trained):
    stage1, stage2 = trained
    passages = ["kelp kelp lagoon", "amber study"]
    from_stage2 = QLScorer.from_pretrained(stage2, bf16=False).score("kelp", passages)
    from_stage1 = QLScorer.from_pretrained(stage1, bf16=False).score("kelp", passages)
    np.testing.assert_allclose(from_stage2, from_stage1, atol=1e-5)
    # and the adapter really changes the embeddings (adapter on = retriever)
    on = Encoder.from_pretrained(stage2, bf16=False).encode_passages(passages)
    off = Encoder.from_pretrained(stage2, bf16=False, adapter=False).encode_passages(passages)
    assert not np.allclose(on, off, atol=1e-3)


def test_finished_output_is_not_overwritten(trained, toy_beir):
    stage1, _ = trained
    with pytest.raises(LLMQLError, match="already holds a trained model"):
        train_ql(QLTrainConfig(model=str(stage1), data=str(toy_beir), out=str(stage1), optim=optim(1, 1e-3)))


def test_interrupted_run_resumes_to_the_uninterrupted_result(tiny_llama, toy_beir, tmp_path, monkeypatch):
    import llmql.train.trainer as trainer

    def config(out):
        return QLTrainConfig(
            model=str(tiny_llama),
            data=str(toy_beir),
            out=str(out),
            prompts=SHORT,
            mask_prob=0.5,
            optim=optim(6, 1e-3, save_every=2),
        )

    clean = train_ql(config(tmp_path / "clean"))

    original = trainer._save_checkpoint
    calls = []

    def crash_after_second_checkpoint(accelerator, out_dir, step):
        original(accelerator, out_dir, step)
        calls.append(step)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(trainer, "_save_checkpoint", crash_after_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train_ql(config(tmp_path / "crashed"))
    monkeypatch.setattr(trainer, "_save_checkpoint", original)
    assert not (tmp_path / "crashed" / CONFIG_NAME).exists()  # nothing looks finished
    with pytest.raises(LLMQLError, match="--resume"):
        train_ql(config(tmp_path / "crashed"))
    resumed = train_ql(config(tmp_path / "crashed"), resume=True)

    from safetensors.torch import load_file

    a, b = load_file(clean / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_two_trainings_with_different_precisions_in_one_process(tiny_llama, toy_beir, tmp_path):
    """accelerate keeps a process-wide state; llmql resets it so a library user can train twice."""
    for name, bf16 in (("a", True), ("b", False)):
        cfg = QLTrainConfig(
            model=str(tiny_llama),
            data=str(toy_beir),
            out=str(tmp_path / name),
            prompts=SHORT,
            optim=OptimConfig(learning_rate=1e-3, max_steps=2, batch_size=8, bf16=bf16),
        )
        assert (train_ql(cfg) / CONFIG_NAME).is_file()


@pytest.mark.parametrize(("route", "pack"), [("two-pass", False), ("dense", True)])
def test_training_on_every_route_follows_the_dense_mask(tiny_llama, toy_beir, tmp_path, monkeypatch, route, pack):
    """Three steps of each stage with the mask-free kernels (two passes), or with packed rows (several examples a
    row, each under its own mask), end at the weights of the padded dense-mask run."""
    from safetensors.torch import load_file

    import llmql.train.modeling as modeling

    def both_stages(out, route: str, pack: bool):
        stage1 = train_ql(
            QLTrainConfig(
                model=str(tiny_llama),
                data=str(toy_beir),
                out=str(out / "ql"),
                prompts=SHORT,
                mask_prob=0.3,
                optim=optim(3, 1e-3, attention=route, pack=pack),
            )
        )
        train_contrastive(
            ContrastiveTrainConfig(
                model=str(stage1),
                data=str(toy_beir),
                out=str(out / "cl"),
                group_size=4,
                prompts=SHORT,
                lora=LoraSettings(r=4, alpha=8, dropout=0.0),
                merge=True,
                optim=optim(3, 3e-3, attention=route, pack=pack),
            )
        )
        return [load_file(out / stage / "model.safetensors") for stage in ("ql", "cl")]

    fast = both_stages(tmp_path / "fast", route, pack)
    monkeypatch.setattr(modeling, "causal_kernel_fits", lambda lm, length: False)  # stage 2 under the mask too
    dense = both_stages(tmp_path / "dense", "dense", False)
    for a, b in zip(fast, dense, strict=True):
        assert a.keys() == b.keys()
        moved = 0
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-4, msg=key)
        moved += sum(1 for key in a if not torch.equal(a[key], load_file(tiny_llama / "model.safetensors")[key]))
        assert moved > 0  # training changed the weights, so equality is not the untouched model's
