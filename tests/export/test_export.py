"""Export of tiny random Llama-, Qwen2- and Gemma3-style models: parity, int8, manifest, QL graphs, bundles."""

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

from llmql.export.convert import ExportConfig, ParityError, export_model
from llmql.export.manifest import read_manifest, sha256
from llmql.export.runtime import OnnxEncoder, OnnxQLScorer
from llmql.train.core.errors import LLMQLError, ModelError
from llmql.train.encoder import Encoder
from llmql.train.ql_scorer import QLScorer
from tests.conftest import INSTALL_CACHE

TEXTS = ["granite ridge models improve results", "kelp", "", "naïve café 日本"]


def test_encoder_graph_takes_two_inputs_and_returns_the_embedding(llama_export):
    graph = onnx.load(str(llama_export / "encoder.onnx"))
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.graph.output] == ["embedding"]


@pytest.mark.parametrize("arch", ["qwen2", "gemma3_text"])  # the second backbone's family exports too
def test_other_architectures_export_matching_pytorch(arch, tmp_path):
    from tests.conftest import build_tiny_model

    model = build_tiny_model(tmp_path / arch, arch)
    out = export_model(ExportConfig(model=str(model), out=str(tmp_path / "export")))
    onnx_vectors = OnnxEncoder.from_dir(out).encode_passages(TEXTS)
    torch_vectors = Encoder.from_pretrained(model, bf16=False).encode_passages(TEXTS)
    cosine = (onnx_vectors * torch_vectors).sum(axis=1)
    assert cosine.min() >= 0.9999
    assert read_manifest(out)["parity"]["encoder.onnx"]["left"]["worst_cosine"] >= 0.9999


def test_left_and_right_padding_give_the_same_rows(llama_export):
    encoder = OnnxEncoder.from_dir(llama_export)
    rows = encoder.tokenizer.passages([""] * len(TEXTS), TEXTS)
    right = encoder.encode_ids(rows, batch_size=4, side="right")
    left = encoder.encode_ids(rows, batch_size=4, side="left")
    alone = np.concatenate([encoder.encode_ids([r]) for r in rows])
    np.testing.assert_allclose(right, left, atol=1e-5)
    np.testing.assert_allclose(right, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(right, axis=1), 1.0, atol=1e-5)


def test_int8_graph_is_close_and_recorded(llama_export, tiny_llama):
    manifest = read_manifest(llama_export)
    assert manifest["encoders"] == ["encoder.onnx", "encoder.int8.onnx"]
    int8 = manifest["parity"]["encoder.int8.onnx"]
    assert int8["right"]["worst_cosine"] >= 0.99 and "delta" in int8["ndcg@10_slice"]
    vectors = OnnxEncoder.from_dir(llama_export, file="encoder.int8.onnx").encode_queries(TEXTS)
    reference = Encoder.from_pretrained(tiny_llama, bf16=False).encode_queries(TEXTS)
    assert (vectors * reference).sum(axis=1).min() >= 0.99
    ops = {n.op_type for n in onnx.load(str(llama_export / "encoder.int8.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}


def test_manifest_describes_every_file(llama_export):
    manifest = read_manifest(llama_export)
    assert manifest["embedding_dim"] == 32 and manifest["source"]["model"]
    for name, entry in manifest["files"].items():
        assert sha256(llama_export / name) == entry["sha256"], name
    assert {"encoder.onnx", "tokenizer.json", "llmql.json", "ql_document.onnx"} <= set(manifest["files"])
    assert manifest["graphs"]["encoder.onnx"] == {"ir_version": 8, "opset": 17}
    assert json.loads((llama_export / "llmql.json").read_text())["model"]["adapter"] is None


def test_ql_graphs_equal_the_pytorch_full_forward(llama_export, tiny_llama):
    onnx_scorer = OnnxQLScorer.from_dir(llama_export)
    torch_scorer = QLScorer.from_pretrained(tiny_llama, bf16=False)
    passages = ["granite ridge models", "kelp kelp lagoon", "the study shows amber"]
    states = onnx_scorer.end_states(passages)
    for query in ("kelp lagoon", "amber study results"):
        np.testing.assert_allclose(
            onnx_scorer.score_states(query, states), torch_scorer.score(query, passages), atol=1e-4
        )
    assert read_manifest(llama_export)["ql_scorer"]["values_per_document"] == 2 * 2 * 2 * 8 + 32


def test_opensearch_bundle_loads_under_onnxruntime_1_16_3(llama_export, tiny_llama):
    legacy = INSTALL_CACHE / "ort-1.16.3"
    if not (legacy / "onnxruntime").is_dir():
        message = f"onnxruntime 1.16.3 not installed at {legacy} (scripts/bootstrap installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    manifest = read_manifest(llama_export)["opensearch_bundle"]
    query = "amber study results"
    script = textwrap.dedent(f"""
        import json, zipfile, numpy as np, onnxruntime as ort
        from tokenizers import Tokenizer
        assert ort.__version__ == "1.16.3", ort.__version__
        z = zipfile.ZipFile({str(llama_export / manifest["query"]["zip"])!r})
        assert sorted(z.namelist()) == ["model.onnx", "tokenizer.json"]
        tok = Tokenizer.from_str(z.read("tokenizer.json").decode())
        enc = tok.encode({query!r})  # as ml-commons does: raw text, special tokens on
        sess = ort.InferenceSession(z.read("model.onnx"), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
        out = sess.run(None, {{"input_ids": np.array([enc.ids], dtype=np.int64),
                               "attention_mask": np.array([enc.attention_mask], dtype=np.int64)}})[0]
        print(json.dumps(out[0].tolist()))
    """)
    env = {**os.environ, "PYTHONPATH": str(legacy)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    ml_commons = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    ours = Encoder.from_pretrained(tiny_llama, bf16=False).encode_queries([query])[0]
    assert float(ml_commons @ ours) >= 0.9999
    config = json.loads((llama_export / manifest["query"]["model_config"]).read_text())
    assert config["function_name"] == "TEXT_EMBEDDING" and config["model_config"]["embedding_dimension"] == 32
    assert config["model_content_hash_value"] == sha256(llama_export / manifest["query"]["zip"])


def test_runtime_does_not_import_torch(llama_export):
    code = (
        "import sys; from llmql.export.runtime import OnnxEncoder, OnnxQLScorer; "
        f"e = OnnxEncoder.from_dir({str(llama_export)!r}); e.encode_queries(['kelp']); "
        f"s = OnnxQLScorer.from_dir({str(llama_export)!r}); s.score('kelp', ['kelp lagoon']); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_existing_output_is_refused_without_overwrite(llama_export, tiny_llama):
    with pytest.raises(LLMQLError, match="--overwrite"):
        export_model(ExportConfig(model=str(tiny_llama), out=str(llama_export)))


def test_not_a_model_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a model directory"):
        export_model(ExportConfig(model=str(tmp_path / "empty"), out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_architecture_optimum_cannot_export(tmp_path):
    from tests.conftest import build_tiny_model

    model = build_tiny_model(tmp_path / "starcoder2", "starcoder2")
    with pytest.raises(ModelError, match="Optimum cannot export this architecture"):
        export_model(ExportConfig(model=str(model), out=str(tmp_path / "out")))
    assert not any(p.name.startswith((".out", "out")) for p in tmp_path.iterdir())


def test_disk_full_leaves_nothing_behind(tiny_llama, tmp_path, monkeypatch):
    import llmql.export.convert as convert

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(convert, "write_manifest", full)
    with pytest.raises(LLMQLError, match="disk full"):
        export_model(ExportConfig(model=str(tiny_llama), out=str(tmp_path / "out")))
    assert list(tmp_path.iterdir()) == []


def test_parity_below_the_bar_refuses_the_export(tiny_llama, tmp_path):
    with pytest.raises(ParityError, match="below the bar"):
        export_model(ExportConfig(model=str(tiny_llama), out=str(tmp_path / "out"), min_cosine_fp32=1.01))
    assert list(tmp_path.iterdir()) == []


def test_runtime_choice_for_an_export(llama_export):
    from llmql.export.runtime import load_encoder, load_ql_scorer
    from llmql.train.core.cpu import cpu_has_bf16
    from llmql.train.encoder import Encoder

    forced = load_encoder(llama_export, runtime="onnx")
    torch_side = load_encoder(llama_export, runtime="torch")
    assert isinstance(forced, OnnxEncoder) and isinstance(torch_side, Encoder)
    assert forced.identity == torch_side.identity  # an index built by one runtime is searchable by the other
    auto = load_encoder(llama_export)
    assert isinstance(auto, Encoder) == cpu_has_bf16()
    assert isinstance(load_ql_scorer(llama_export, runtime="onnx"), OnnxQLScorer)
    texts = ["kelp kelp lagoon", "granite"]
    np.testing.assert_allclose(
        forced.encode_passages(texts),
        Encoder(torch_side.model, torch_side.tokenizer, bf16=False).encode_passages(texts),
        atol=1e-5,
    )


def test_overwrite_refuses_a_folder_that_is_not_an_export(tiny_llama, tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "important.txt").write_text("keep")
    with pytest.raises(LLMQLError, match="no llmql export manifest"):
        export_model(ExportConfig(model=str(tiny_llama), out=str(folder), overwrite=True))
    assert (folder / "important.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_overwrite_refuses_an_export_holding_foreign_files(llama_export, tiny_llama, tmp_path):
    out = tmp_path / "export"
    shutil.copytree(llama_export, out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(LLMQLError, match=r"notes\.txt"):
        export_model(ExportConfig(model=str(tiny_llama), out=str(out), overwrite=True))
    assert (out / "notes.txt").read_text() == "mine"


def test_overwrite_of_the_working_directory_is_a_one_line_error(tiny_llama, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from llmql.export.cli import main as export_cli

    (tmp_path / "keep.txt").write_text("keep")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(export_cli, [str(tiny_llama), ".", "--overwrite"])
    assert result.exit_code == 1 and "no llmql export manifest" in result.output
    assert "Traceback" not in result.output and (tmp_path / "keep.txt").read_text() == "keep"


def test_a_failed_deletion_keeps_the_earlier_export_and_no_hidden_folder(
    llama_export, tiny_llama, tmp_path, monkeypatch
):
    import llmql.export.convert as convert

    out = tmp_path / "export"
    shutil.copytree(llama_export, out)
    before = (out / "manifest.json").read_text()
    real_rmtree = shutil.rmtree

    def refuse_old(path, *args, **kwargs):
        if ".old-" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(convert.shutil, "rmtree", refuse_old)
    with pytest.raises(LLMQLError, match="kept unchanged"):
        export_model(ExportConfig(model=str(tiny_llama), out=str(out), overwrite=True))
    assert (out / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
