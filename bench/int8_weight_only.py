"""Weight-only int8 (ONNX Runtime's MatMulNBits, block-wise) as an alternative to Optimum's dynamic int8, for
SmolLM2's encoder: cosine to fp32 and passages/s against the fp32 graph, in one run.

    .venv/bin/python -m bench.int8_weight_only

Not through Optimum (its quantizer has no weight-only mode), so llmql does not ship it; this measures whether
it would be worth it. Needs the fp32 export from bench/encode_speed.py. Writes
bench/results/int8_weight_only.json.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bench.common import median, timed, write_results
from bench.encode_speed import CACHE, passages


def main() -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    from llmql.export.runtime import OnnxEncoder, session

    source = CACHE / "exports" / "smollm2-base"
    fp32 = OnnxEncoder.from_dir(source)
    texts = passages(32)
    rows = fp32.tokenizer.passages([t for t, _ in texts], [x for _, x in texts])
    reference = fp32.encode_ids(rows, 16)
    batch = rows[:16]
    fp32_speed = 16 / median(timed(lambda: fp32.encode_ids(batch, 16), 2))
    out_rows = []
    work = Path(tempfile.mkdtemp(prefix="llmql-nbits-"))
    for bits, level in ((8, 4), (8, 0), (4, 4)):
        config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=level, bits=bits)
        quantizer = MatMulNBitsQuantizer(
            onnx.load(str(source / "encoder.onnx")),
            bits=bits,
            block_size=32,
            is_symmetric=True,
            accuracy_level=level,
            algo_config=config,
        )
        quantizer.process()
        path = work / f"encoder-{bits}bit-level{level}.onnx"
        quantizer.model.save_model_to_file(str(path), use_external_data_format=False)
        encoder = OnnxEncoder(session(path), fp32.tokenizer)
        vectors = encoder.encode_ids(rows, 16)
        cosine = (vectors * reference).sum(axis=1)
        speed = 16 / median(timed(lambda encoder=encoder: encoder.encode_ids(batch, 16), 2))
        row = {
            "bits": bits,
            "accuracy_level": level,
            "block_size": 32,
            "worst_cosine": float(cosine.min()),
            "median_cosine": float(np.median(cosine)),
            "passages_per_s": speed,
            "fp32_passages_per_s": fp32_speed,
            "speedup_over_onnx_fp32": speed / fp32_speed,
        }
        out_rows.append(row)
        print(row, flush=True)
    write_results(
        "int8_weight_only",
        {"passages": len(rows), "timed_batch": "16 SciFact passages (<= 200 tokens)", "rows": out_rows},
    )


if __name__ == "__main__":
    main()
