"""What an export costs, step by step: tracing each graph, the shape checks against PyTorch (each graph at shapes
its trace did not see), and the parity checks on real passages.

    .venv/bin/python -m bench.export_cost --model runs/retriever [--data ../shared/data/scifact] [--int8]

Times one `export_model` run by wrapping its steps (the functions `llmql.export.convert` calls), so the figures are
of the real export, not a re-enactment; prints them and writes bench/results/export_cost.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench.common import write_results

STEPS = {  # llmql.export.convert's names -> the step they are counted under
    "_export_graph": "trace and write the graphs",
    "check_encoder": "shape checks",
    "check_document": "shape checks",
    "check_query": "shape checks",
    "_validate_encoders": "encoder parity (and int8)",
}


def timed_export(model: str, data: str | None, int8: bool) -> dict[str, float]:
    import llmql.export.convert as convert
    from llmql.export.manifest import read_manifest

    seconds: dict[str, float] = defaultdict(float)

    def wrap(name: str):
        inner = getattr(convert, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                seconds[STEPS[name]] += time.perf_counter() - start

        return inner, timed

    originals = {}
    for name in STEPS:
        originals[name], replacement = wrap(name)
        setattr(convert, name, replacement)
    try:
        with tempfile.TemporaryDirectory() as work:
            cfg = convert.ExportConfig(
                model=model,
                out=str(Path(work) / "export"),
                quantize="int8" if int8 else "none",
                ql_scorer=True,
                validation_data=data,
            )
            start = time.perf_counter()
            out = convert.export_model(cfg)
            seconds["whole export"] = time.perf_counter() - start
            shapes = read_manifest(out)["validated_shapes"]
    finally:
        for name, inner in originals.items():
            setattr(convert, name, inner)
    return {"seconds": dict(seconds), "validated_shapes": shapes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="trained model directory (or a model name)")
    parser.add_argument("--data", default=None, help="BEIR folder for the parity passages (--validation-data)")
    parser.add_argument("--int8", action="store_true", help="also the int8 encoder and its checks")
    args = parser.parse_args()
    result = timed_export(args.model, args.data, args.int8)
    whole = result["seconds"]["whole export"]
    for step, value in sorted(result["seconds"].items(), key=lambda x: -x[1]):
        print(f"{step:<32} {value:8.1f} s  {value / whole:6.1%}")
    for graph, cases in result["validated_shapes"].items():
        print(graph, ", ".join(f"{c['rows']}x{c['tokens']}" for c in cases))
    write_results("export_cost", {"model": args.model, "data": args.data, "int8": args.int8, **result})


if __name__ == "__main__":
    main()
