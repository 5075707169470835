"""Does LLM-QL pay? Trains and evaluates the paper's comparison on SciFact with SmolLM2-135M.

One command per table, each resumable (finished jobs are skipped, interrupted training resumes):

    .venv/bin/python -m bench.quality split      [--preset cpu|gpu|dry] [--device auto]
    .venv/bin/python -m bench.quality tune-ql    # stage-1 learning rate, by held-out QL loss on validation
    .venv/bin/python -m bench.quality tune-cl    # stage-2 setting per arm, by validation nDCG@10
    .venv/bin/python -m bench.quality main       # runs 1-8 on the 300 test claims (tuning first, as needed)
    .venv/bin/python -m bench.quality report     # tables + bench/results/quality[-gpu].json
    .venv/bin/python -m bench.quality all        # main, then report (cpu); with --preset gpu: compare
    .venv/bin/python -m bench.quality compare    # one timed table: every retriever and re-ranker, SciFact + DL19
                                                  # [--minutes 8] [--seeds 1] (comparison.py)

Presets (`presets.py`): `cpu` is the scaled-down protocol of BENCHMARKS.md's CPU tables; `gpu` trains to
convergence on the data at hand (`--preset gpu --device cuda`); `dry` walks every step of `gpu` (and the CPU
extras) on a tiny random model and toy collection (LLMQL_BENCH_MODEL / LLMQL_BENCH_DATA) in minutes on a CPU.

Modules: presets (protocols, context), data (the validation split), jobs (the result cache, keyed by the whole
configuration), steps (train, index, evaluate), runs (tuning and runs 1-8), statistics, report, comparison (the
timed GPU table; its indexes go to the exact in-memory engine on the device, so a GPU host needs no LanceDB).
Work (models, indexes, run files) goes to $LLMQL_BENCH_DIR (default ~/.cache/llmql/bench/quality[-PRESET]);
finished jobs' figures go to bench/results/quality[-gpu]/ (committed, so a later checkout skips them).
"""
