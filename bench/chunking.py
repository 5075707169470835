"""Chunking against cutting on a BEIR collection: dense and hybrid nDCG@10 and Recall@100, index size, sync time.

    .venv/bin/python -m bench.chunking --model EXPORT --data ../shared/data/scifact --tokens 64 128

For each passage length N: "cut" syncs every document cut to its first N tokens (the export's passage length set
to N), "chunk" syncs it whole as passages of N tokens overlapping by N/8 (`llmql-sync --chunk-tokens N
--chunk-overlap N/8`); both are searched with the same query encoder. Each finished arm is kept in the work
folder, and an arm stopped half-way resumes its sync, so a run started again does only what is left; a resumed
arm's sync time is its last part's seconds per document times the corpus (flagged `sync_seconds_estimated`).
The results file is rewritten after every arm, so a run stopped part-way leaves what it finished.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

from bench.common import model_view, write_results


def stored_rows(index_dir: Path, where: str | None = None) -> int:
    """Rows in the embedded index (documents, or a chunked index's passages), whatever a resumed sync counted."""
    import lancedb

    return lancedb.connect(str(index_dir)).open_table("bench").count_rows(where)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_arm(arm: str, tokens: int, export: Path, data: Path, work: Path, args: argparse.Namespace) -> dict:
    from llmql.connectors.sync import SyncConfig, sync
    from llmql.plugin.evaluate import EvalConfig, evaluate

    done = work / f"{arm}-{tokens}.json"
    if done.is_file():
        return json.loads(done.read_text())
    overlap = tokens // 8 if arm == "chunk" else 0
    model = export if arm == "chunk" else model_view(export, work / f"export-cut{tokens}", max_passage_tokens=tokens)
    index_dir = work / f"index-{arm}-{tokens}"
    runtime = dict(runtime=args.runtime, device=args.device)
    cfg = SyncConfig(corpus=str(data), model=str(model), url=str(index_dir), index="bench", **runtime)
    if arm == "chunk":
        cfg = replace(cfg, chunk_tokens=tokens, chunk_overlap=overlap)
    from llmql.connectors.sync import state_path

    interrupted = state_path(cfg).is_file()  # an arm stopped half-way resumes after its last confirmed batch
    report = sync(replace(cfg, resume=interrupted, recreate=not interrupted))
    documents = stored_rows(index_dir, "passage = 0" if arm == "chunk" else None)
    per_document = report.seconds / max(report.indexed, 1)
    evaluation = evaluate(
        EvalConfig(
            data=str(data),
            url=str(index_dir),
            index="bench",
            model=str(model),
            runs=("bm25", "dense", "hybrid"),
            out_dir=str(work / f"eval-{arm}-{tokens}"),
            max_queries=args.max_queries,
            **runtime,
        )
    )
    result = {
        "arm": arm,
        "tokens": tokens,
        "overlap": overlap,
        "sync_seconds": per_document * documents if interrupted else report.seconds,
        "sync_seconds_estimated": interrupted,  # from the last part's rate: earlier parts were not timed
        "sync_seconds_per_document": per_document,
        "documents": documents,
        "passages": stored_rows(index_dir),
        # counted in this sync (a resumed cut arm would count only its last part), or in the index itself
        "documents_cut": None if interrupted else report.cut,
        "documents_split": stored_rows(index_dir, "passage = 1") if arm == "chunk" else 0,
        "index_bytes": folder_bytes(index_dir),
        "queries": evaluation["queries"],
        "metrics": {run: evaluation["runs"][run]["metrics"] for run in ("bm25", "dense", "hybrid")},
    }
    done.write_text(json.dumps(result, indent=2))
    return result


def paired_gains(work: Path, tokens: int) -> dict:
    """Chunk - cut at one length, per query, for dense and hybrid, nDCG@10 and R@100: mean, bootstrap interval,
    t-test."""
    from bench.quality.statistics import paired

    def per_query(arm: str, run: str, metric: str) -> dict[str, float]:
        summary = json.loads((work / f"eval-{arm}-{tokens}" / "summary.json").read_text())
        return {q: v[metric] for q, v in summary["runs"][run]["per_query"].items()}

    return {
        run: {m: paired(per_query("chunk", run, m), per_query("cut", run, m)) for m in ("nDCG@10", "R@100")}
        for run in ("dense", "hybrid")
    }


def table(results: list[dict]) -> str:
    rows = [
        "| passages | arm | passages stored | docs cut / split | dense nDCG@10 | dense R@100 | hybrid nDCG@10 | "
        "hybrid R@100 | index MB | sync s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        m = r["metrics"]
        changed = r["documents_cut"] if r["arm"] == "cut" else r["documents_split"]
        seconds = f"~{r['sync_seconds']:.0f}" if r.get("sync_seconds_estimated") else f"{r['sync_seconds']:.0f}"
        changed = "?" if changed is None else f"{changed:,}"
        rows.append(
            f"| {r['tokens']} | {r['arm']} | {r['passages']:,} | {changed} | {m['dense']['nDCG@10']:.4f} | "
            f"{m['dense']['R@100']:.4f} | {m['hybrid']['nDCG@10']:.4f} | {m['hybrid']['R@100']:.4f} | "
            f"{r['index_bytes'] / 1e6:.1f} | {seconds} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an llmql-export directory (its passage length >= tokens)")
    parser.add_argument("--data", required=True, help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--work", default=str(Path.home() / ".cache" / "llmql" / "bench" / "chunking"))
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument(
        "--corpus-docs",
        type=int,
        default=None,
        help="search a seeded slice: every document the test queries judge plus random others up to this many "
        "(default: the full corpus)",
    )
    parser.add_argument("--runtime", choices=["auto", "onnx", "torch"], default="onnx")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fresh", action="store_true", help="forget finished arms")
    args = parser.parse_args()
    work = Path(args.work)
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    if args.corpus_docs is not None:
        from llmql.plugin.quickstart import corpus_slice

        data = corpus_slice(data, work / "corpus-slice", args.corpus_docs)
    results: list[dict] = []
    for tokens in args.tokens:
        for arm in ("cut", "chunk"):
            results.append(run_arm(arm, tokens, Path(args.model), data, work, args))
            report(results, work, args)


def report(results: list[dict], work: Path, args: argparse.Namespace) -> None:
    """Print the finished arms and their paired gains (lengths with both arms), and write them to the results."""
    print(table(results))
    lengths = [t for t in args.tokens if sum(r["tokens"] == t for r in results) == 2]
    gains = {tokens: paired_gains(work, tokens) for tokens in lengths}
    for tokens, by_run in gains.items():
        for run, by_metric in by_run.items():
            for metric, c in by_metric.items():
                low, high = c["ci95"]
                print(
                    f"{tokens} tokens, {run}: chunk - cut {metric} {c['mean_difference']:+.4f} "
                    f"[{low:+.4f}, {high:+.4f}], p = {c['t_test_p']:.2g} ({c['queries']} queries)"
                )
    bm25 = results[0]["metrics"]["bm25"]
    print(f"BM25 alone: nDCG@10 {bm25['nDCG@10']:.4f}, R@100 {bm25['R@100']:.4f}")
    payload = {"model": args.model, "data": args.data, "corpus_docs": args.corpus_docs, "tokens": args.tokens}
    name = "chunking" if args.corpus_docs is None else f"chunking-slice{args.corpus_docs}"
    write_results(name, {**payload, "results": results, "chunk_minus_cut": gains})


if __name__ == "__main__":
    main()
