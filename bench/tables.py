"""Print the markdown tables of BENCHMARKS.md from bench/results/*.json (so every figure there has a source).

.venv/bin/python -m bench.tables [name ...]
"""

from __future__ import annotations

import json
import sys

from bench.common import RESULTS


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def machine_line(data: dict) -> str:
    m = data["machine"]
    return (
        f"_Measured {m['date']} on {m['cpu']}, {m['cores']} cores, torch {m['torch']}, "
        f"native bf16: {m['bf16_native']}, commit {m['commit']}._"
    )


def train_speed() -> None:
    data = load("train_speed")
    if not data:
        return
    print("| stage | attention | precision | tokens/step | s/step | tokens/s | share of matmul peak |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in data["stages"]:
        share = f"{r['share_of_matmul_peak']:.0%}" if "share_of_matmul_peak" in r else "-"
        print(
            f"| {r['stage']} | {r.get('attention', 'dense')} | {r['precision']} | {r['tokens_per_step']} | "
            f"{r['seconds_per_step']:.2f} | {r['tokens_per_second']:.0f} | {share} |"
        )
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in data["matmul_gflops"].items())
    print(f"\nmatmul peak in the same run: {peaks} GFLOP/s\n")
    print(machine_line(data))


def encode_speed() -> None:
    data = load("encode_speed")
    if not data:
        return
    peak = data["matmul_peak_gflops"]
    print(f"matmul peak in the same run: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s\n")
    print("| model | tokens | batch | torch fp32 | torch bf16 | ONNX fp32 | ONNX int8 | int8 / torch fp32 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    keyed: dict = {}
    for r in data["rows"]:
        keyed.setdefault((r["model"], r["tokens"], r["batch"]), {})[r["path"]] = r
    for (model, tokens, batch), paths in keyed.items():
        cells = [
            f"{paths[p]['passages_per_s']:.1f} ({100 * paths[p]['share_of_peak']:.0f}%)"
            for p in ("torch fp32", "torch bf16 autocast", "onnx fp32", "onnx int8")
        ]
        ratio = paths["onnx int8"]["passages_per_s"] / paths["torch fp32"]["passages_per_s"]
        print(f"| {model} | {tokens} | {batch} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    print("\npassages/s (share of the matmul peak of the path's precision; int8 is compared with the fp32 peak)\n")
    print("| model | path | worst cosine to torch fp32 | median |\n|---|---|---:|---:|")
    for model, paths in data["cosine_to_torch_fp32"].items():
        for path, c in paths.items():
            print(f"| {model} | {path} | {c['min']:.4f} | {c['median']:.4f} |")
    print()
    print(machine_line(data))


def sync_speed() -> None:
    data = load("sync_speed")
    if not data:
        return
    print(
        f"{data['documents']} SciFact documents, batch {data['settings']['batch_size']}, "
        f"model {data['settings']['model']}, runtime {data['settings']['runtime']}\n"
    )
    print("| target | seconds | documents/s | cost over encoding alone |\n|---|---:|---:|---:|")
    for r in data["rows"]:
        over = f"{100 * r['overhead_over_encoding']:+.1f}%" if "overhead_over_encoding" in r else "-"
        print(f"| {r['target']} | {r['seconds']:.1f} | {r['docs_per_s']:.1f} | {over} |")
    print()
    print(machine_line(data))


def latency() -> None:
    data = load("latency")
    if not data:
        return
    print(f"{data['documents']} documents, {data['queries']} queries; milliseconds p50 / p95\n")
    engines = list(data["engines"])
    print("| stage | " + " | ".join(engines) + " |\n|---|" + "---:|" * len(engines))
    stages = list(next(iter(data["engines"].values())))
    for stage in stages:
        cells = []
        for engine in engines:
            v = data["engines"][engine].get(stage)
            cells.append(f"{v['p50']:.0f} / {v['p95']:.0f}" if v else "-")
        print(f"| {stage} | " + " | ".join(cells) + " |")
    s = data["storage_bytes_per_document"]
    print(
        f"\nstorage per document: QL cache (fp16) {s['ql_state_fp16']:,} bytes; vector {s['vector_float32']:,} bytes\n"
    )
    print(machine_line(data))


TABLES = {"train_speed": train_speed, "encode_speed": encode_speed, "sync_speed": sync_speed, "latency": latency}

if __name__ == "__main__":
    for name in sys.argv[1:] or TABLES:
        print(f"\n### {name}\n")
        TABLES[name]()
