"""Command line of bench.quality (see the package docstring)."""

from __future__ import annotations

import argparse
import os

from bench.quality import __doc__ as DOC


def main() -> None:
    from bench.quality.comparison import compare
    from bench.quality.data import validation_beir, validation_ids
    from bench.quality.presets import PRESETS, context
    from bench.quality.report import report
    from bench.quality.runs import main_runs, tune_cl, tune_ql

    parser = argparse.ArgumentParser(
        prog="bench.quality", description=DOC, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["split", "tune-ql", "tune-cl", "main", "report", "compare", "all"])
    default = "dry" if os.environ.get("LLMQL_BENCH_DRY") == "1" else "cpu"
    parser.add_argument("--preset", choices=sorted(PRESETS), default=default)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (indexing and evaluation)")
    parser.add_argument(
        "--ablations",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="runs 5-6 (default: the preset's choice; the GPU preset leaves them out)",
    )
    parser.add_argument("--seeds", type=int, default=None, help="compare: stage-2 seeds (default 1; 3: the protocol)")
    parser.add_argument("--minutes", type=float, default=None, help="compare: the time budget (default 8)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ctx = context(args.preset, args.device, args.ablations, args.seeds, args.minutes)
    commands = {
        "split": lambda: print(validation_ids(ctx), validation_beir(ctx)),
        "tune-ql": lambda: tune_ql(ctx),
        "tune-cl": lambda: tune_cl(ctx),
        "main": lambda: main_runs(ctx),
        "report": lambda: report(ctx),
        "compare": lambda: compare(ctx),
        # the GPU preset's one command is the timed comparison; the CPU tables are runs 1-8 and their report
        "all": lambda: compare(ctx) if args.preset == "gpu" else (main_runs(ctx), report(ctx)),
    }
    commands[args.command]()


if __name__ == "__main__":
    main()
