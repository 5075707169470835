"""Reading a corpus to sync: BEIR `corpus.jsonl`, JSONL with chosen fields, or TSV with a header.

Bad lines are yielded as `BadLine` (with file, line and reason) rather than raised, so that the caller's
`--on-error` policy decides; the reader itself never stops half-way silently.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llmql.train.core.errors import DataError
from llmql.train.data import jsonl_lines


@dataclass(frozen=True)
class CorpusFormat:
    id_field: str = "_id"
    text_field: str = "text"
    title_field: str = "title"
    keep_fields: tuple[str, ...] = ()  # metadata copied into the index for filters


@dataclass(frozen=True)
class SourceDoc:
    line: int
    id: str
    title: str
    text: str
    fields: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BadLine:
    line: int
    reason: str
    id: str | None = None


def corpus_file(path: str | Path) -> Path:
    """A BEIR folder means its corpus.jsonl."""
    path = Path(path)
    return path / "corpus.jsonl" if path.is_dir() else path


@dataclass(frozen=True)
class CorpusScan:
    documents: int  # lines that make a document
    bad: list[BadLine]  # every line that does not, in file order

    @property
    def lines(self) -> int:
        return self.documents + len(self.bad)


def scan_corpus(path: str | Path, fmt: CorpusFormat = CorpusFormat()) -> CorpusScan:
    """Read the whole corpus once without keeping it, so a sync can refuse bad input before its first write."""
    documents, bad = 0, []
    for item in read_corpus(path, fmt):
        if isinstance(item, BadLine):
            bad.append(item)
        else:
            documents += 1
    return CorpusScan(documents, bad)


def corpus_fingerprint(path: Path) -> str:
    """The corpus file's content digest: a resumed sync says when the file changed since it was interrupted."""
    with path.open("rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


def written_as(model: str, end_states: str = "none", chunking: str | None = None) -> str:
    """What a stored document depends on besides its content: the model, and the [E] states' format and the
    passage settings where a sync writes them (an incremental sync or a resume that adds states or chunks must
    not skip a document because its text is unchanged). Plain vectors keep the model alone, as before."""
    parts = [
        model,
        *([f"states={end_states}"] if end_states != "none" else []),
        *([f"chunks={chunking}"] if chunking else []),
    ]
    return "|".join(parts)


def content_hash(doc: SourceDoc, model: str) -> str:
    """Changes when the text, the title, the kept fields or `model` (`written_as`) change: then what is stored
    must too."""
    payload = json.dumps([doc.title, doc.text, doc.fields, model], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def read_corpus(path: str | Path, fmt: CorpusFormat = CorpusFormat()) -> Iterator[SourceDoc | BadLine]:
    path = corpus_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: corpus file not found")
    rows = _tsv_rows(path, fmt) if path.suffix in (".tsv", ".tab") else _jsonl_rows(path)
    seen: dict[str, int] = {}
    for number, obj in rows:
        if isinstance(obj, BadLine):
            yield obj
            continue
        doc_id = obj.get(fmt.id_field)
        if doc_id is None or str(doc_id).strip() == "":
            yield BadLine(number, f"missing id field {fmt.id_field!r}")
            continue
        doc_id = str(doc_id)
        title, text = obj.get(fmt.title_field) or "", obj.get(fmt.text_field) or ""
        if not isinstance(title, str) or not isinstance(text, str):
            yield BadLine(number, "title and text must be strings", doc_id)
            continue
        if not (title.strip() or text.strip()):
            yield BadLine(number, "empty text", doc_id)
            continue
        if doc_id in seen:
            yield BadLine(number, f"duplicate id (first on line {seen[doc_id]})", doc_id)
            continue
        seen[doc_id] = number
        fields = {k: obj[k] for k in fmt.keep_fields if k in obj and isinstance(obj[k], str | int | float | bool)}
        yield SourceDoc(number, doc_id, title, text, fields)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict | BadLine]]:
    for number, obj in jsonl_lines(path):
        yield number, BadLine(number, obj) if isinstance(obj, str) else obj


def _tsv_rows(path: Path, fmt: CorpusFormat) -> Iterator[tuple[int, dict | BadLine]]:
    with path.open("rb") as handle:
        header: list[str] | None = None
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                yield number, BadLine(number, f"invalid UTF-8 ({err.reason})")
                continue
            if not line.strip():
                continue
            cells = next(csv.reader([line], delimiter="\t", quoting=csv.QUOTE_NONE))
            if header is None:
                _check_header(path, number, cells, fmt)
                header = cells
                continue
            if len(cells) != len(header):
                yield number, BadLine(number, f"expected {len(header)} tab-separated columns, got {len(cells)}")
                continue
            yield number, dict(zip(header, cells, strict=True))


def _check_header(path: Path, number: int, cells: list[str], fmt: CorpusFormat) -> None:
    """A TSV's first line must name its columns: a data row taken as the header would lose a document silently."""
    wanted = [fmt.id_field, fmt.text_field]
    missing = [name for name in wanted if name not in cells]
    if missing:
        raise DataError(
            f"{path}:{number}: the header line has no column {missing[0]!r} (it reads {cells[:4]}); a TSV corpus "
            f"needs a first line naming its columns, or --id-field/--text-field naming the ones it has"
        )
