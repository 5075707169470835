"""Reading and checking training and evaluation data: BEIR collections and Tevatron-style JSONL.

Every problem is reported as a `DataError` naming the file and line, before any training starts.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmql.train.core.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Doc:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class TrainGroup:
    """One training query with its positive passages and (possibly empty) hard negatives."""

    query_id: str
    query: str
    positives: tuple[Doc, ...]
    negatives: tuple[Doc, ...] = ()


@dataclass
class BeirData:
    corpus: dict[str, Doc]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)


def jsonl_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Yield (line number, object), or (line number, reason) for a line that is not a JSON object.

    Blank lines are skipped. Callers choose the policy: training raises, sync may skip and report.
    """
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                yield number, f"invalid UTF-8 ({err.reason})"
                continue
            except json.JSONDecodeError as err:
                yield number, f"malformed JSON ({err.msg})"
                continue
            yield number, obj if isinstance(obj, dict) else f"expected a JSON object, got {type(obj).__name__}"


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object); a bad line is a DataError naming path:line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    for number, obj in jsonl_lines(path):
        if isinstance(obj, str):
            raise DataError(f"{path}:{number}: {obj}")
        yield number, obj


def _string_field(obj: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise DataError(f"{where}: missing '{key}'")
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise DataError(f"{where}: '{key}' must be a string")
    return value


def load_corpus(path: Path, empty: set[str] | None = None) -> dict[str, Doc]:
    """BEIR `corpus.jsonl` ({_id, title, text}); ids must be unique. Documents with neither title nor text (classic
    collections have a few) are left out with a warning that counts them; their ids go into `empty`."""
    corpus: dict[str, Doc] = {}
    skipped: set[str] = set() if empty is None else empty
    for number, obj in read_jsonl(path):
        where = f"{path}:{number}"
        doc_id = _string_field(obj, "_id", where)
        text = _string_field(obj, "text", where)
        title = _string_field(obj, "title", where, required=False)
        if not doc_id:
            raise DataError(f"{where}: empty '_id'")
        if doc_id in corpus or doc_id in skipped:
            raise DataError(f"{where}: duplicate document id {doc_id!r}")
        if not (text.strip() or title.strip()):
            skipped.add(doc_id)
            continue
        corpus[doc_id] = Doc(doc_id, title, text)
    if skipped:
        log.warning("%s: %d empty document(s) left out (%s)", path, len(skipped), ", ".join(sorted(skipped)[:5]))
    if not corpus:
        raise DataError(f"{path}: no documents")
    return corpus


def load_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for number, obj in read_jsonl(path):
        where = f"{path}:{number}"
        qid = _string_field(obj, "_id", where)
        text = _string_field(obj, "text", where)
        if not text.strip():
            raise DataError(f"{where}: query {qid!r} has empty text")
        if qid in queries:
            raise DataError(f"{where}: duplicate query id {qid!r}")
        queries[qid] = text
    return queries


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV with a header `query-id corpus-id score`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t")
        for number, row in enumerate(rows, start=1):
            if not row or (number == 1 and row[0] == "query-id"):
                continue
            if len(row) != 3:
                raise DataError(f"{path}:{number}: expected 3 tab-separated columns, got {len(row)}")
            try:
                score = int(row[2])
            except ValueError:
                raise DataError(f"{path}:{number}: score {row[2]!r} is not an integer") from None
            qrels.setdefault(row[0], {})[row[1]] = score
    return qrels


def load_beir(directory: Path, split: str | None = "train") -> BeirData:
    """Load a BEIR collection and check that every qrels id exists in the corpus and the queries."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory (expected corpus.jsonl, queries.jsonl, qrels/)")
    empty: set[str] = set()
    corpus = load_corpus(directory / "corpus.jsonl", empty)
    queries = load_queries(directory / "queries.jsonl")
    qrels: dict[str, dict[str, int]] = {}
    if split is not None:
        qrels_path = directory / "qrels" / f"{split}.tsv"
        qrels = load_qrels(qrels_path)
        for qid, docs in qrels.items():
            if qid not in queries:
                raise DataError(f"{qrels_path}: query id {qid!r} is not in {directory / 'queries.jsonl'}")
            for doc_id in docs:
                if doc_id not in corpus and doc_id not in empty:  # an empty judged one stays judged, unfindable
                    raise DataError(f"{qrels_path}: document id {doc_id!r} is not in {directory / 'corpus.jsonl'}")
    return BeirData(corpus, queries, qrels)


def read_id_file(path: str | Path | None) -> set[str]:
    """One id per line (blank lines and '#' comments ignored); used for held-out validation queries."""
    if path is None:
        return set()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return {s for line in path.read_text(encoding="utf-8").splitlines() if (s := line.strip()) and s[0] != "#"}


def hold_out_queries(data: str | Path, out: str | Path, share: float, most: int, seed: int = 0) -> Path:
    """Write a random `share` (at most `most`) of the judged training queries' ids to `out`: queries kept out of
    both training stages (`--exclude-queries`) to tune the search settings on (`llmql tune --queries`), so that
    neither training nor tuning sees a test query. The file's first line records how it was drawn; an existing
    file drawn the same way is kept (a rerun holds out the same queries), as is one written by hand; one drawn
    otherwise, or holding ids that are not this collection's training queries, is refused, not silently reused."""
    import random

    out = Path(out)
    qrels = Path(data) / "qrels" / "train.tsv"
    if not qrels.is_file():
        raise DataError(f"{qrels}: no training judgements to hold queries out of")
    rows = qrels.read_text(encoding="utf-8").splitlines()[1:]
    qids = sorted({line.split("\t")[0] for line in rows if line.strip()})
    recipe = f"# llmql hold-out: share={share:g} most={most} seed={seed} of {len(qids)} training queries"
    if out.exists():
        _check_hold_out(out, recipe, set(qids))
        return out
    chosen = sorted(random.Random(seed).sample(qids, min(most, max(1, round(share * len(qids))))))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(recipe + "\n" + "".join(f"{q}\n" for q in chosen), encoding="utf-8")
    os.replace(tmp, out)
    return out


def _check_hold_out(out: Path, recipe: str, training: set[str]) -> None:
    """An existing hold-out file is reused only when drawn the same way from these training queries."""
    lines = out.read_text(encoding="utf-8").splitlines() if out.is_file() else None
    if lines is None:
        raise DataError(f"{out}: is not a file")
    foreign = sorted(read_id_file(out) - training)
    if foreign:
        raise DataError(f"{out}: holds ids that are not judged training queries ({', '.join(foreign[:3])}); not used")
    if lines and lines[0].startswith("# llmql hold-out: ") and lines[0] != recipe:
        was = lines[0].removeprefix("# llmql hold-out: ")
        raise DataError(
            f"{out}: already exists, drawn {was}, not {recipe.removeprefix('# llmql hold-out: ')}; delete it or "
            "choose another --out (the queries trained on must not change under a run)"
        )


def groups_from_qrels(data: BeirData, exclude: set[str] = frozenset()) -> list[TrainGroup]:
    """One group per judged query (score > 0), positives from the qrels, no negatives yet."""
    groups = []
    for qid in sorted(data.qrels):
        if qid in exclude:
            continue
        positives = tuple(data.corpus[d] for d, s in sorted(data.qrels[qid].items()) if s > 0 and d in data.corpus)
        if positives:
            groups.append(TrainGroup(qid, data.queries[qid], positives))
    return groups


def _doc_from_json(obj: Any, where: str) -> Doc:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: passages must be objects with docid/title/text")
    text = _string_field(obj, "text", where)
    if not text.strip():
        raise DataError(f"{where}: a passage has empty text")
    return Doc(_string_field(obj, "docid", where, required=False), _string_field(obj, "title", where, False), text)


def load_training_jsonl(path: Path) -> list[TrainGroup]:
    """Tevatron-style JSONL: {query_id, query, positive_passages: [...], negative_passages: [...]}."""
    groups = []
    for number, obj in read_jsonl(path):
        where = f"{path}:{number}"
        query = _string_field(obj, "query", where)
        if not query.strip():
            raise DataError(f"{where}: empty query")
        pos = obj.get("positive_passages") or []
        neg = obj.get("negative_passages") or []
        if not isinstance(pos, list) or not isinstance(neg, list):
            raise DataError(f"{where}: positive_passages and negative_passages must be lists")
        if not pos:
            raise DataError(f"{where}: no positive_passages")
        groups.append(
            TrainGroup(
                _string_field(obj, "query_id", where, required=False) or str(number),
                query,
                tuple(_doc_from_json(p, where) for p in pos),
                tuple(_doc_from_json(n, where) for n in neg),
            )
        )
    if not groups:
        raise DataError(f"{path}: no training examples")
    return groups


def write_training_jsonl(path: Path, groups: Iterable[TrainGroup]) -> None:
    """Write groups as Tevatron-style JSONL atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")

    def passage(d: Doc) -> dict[str, str]:
        return {"docid": d.id, "title": d.title, "text": d.text}

    with tmp.open("w", encoding="utf-8") as handle:
        for g in groups:
            row = {
                "query_id": g.query_id,
                "query": g.query,
                "positive_passages": [passage(d) for d in g.positives],
                "negative_passages": [passage(d) for d in g.negatives],
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def title_pseudo_queries(corpus: dict[str, Doc]) -> list[TrainGroup]:
    """Extra stage-1 data, clearly labelled: each title as a pseudo-query for its own abstract without the title."""
    return [
        TrainGroup(f"title:{d.id}", d.title, (Doc(d.id, "", d.text),))
        for d in corpus.values()
        if d.title.strip() and d.text.strip()
    ]
