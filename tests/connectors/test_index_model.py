"""A stateful property test of the index: random sequences of sync operations against a plain model of what the
index must hold (Hypothesis' RuleBasedStateMachine).

Operations: corpus edits (add, change, remove, reorder; ids with NUL, slashes and non-ASCII), plain,
incremental and --recreate syncs, a sync killed at a random write, --resume (after edits, or after the index was
emptied), --delete-missing with malformed lines and blank lines of known ids, --alias generations (a killed one
must leave the alias serving what it served), and a second writer's documents landing between syncs. After each
step a fresh reader (a new handle; for the memory engine, nothing cached from this process) is checked against the
model: every corpus document held with its current content hash, nothing present the model does not allow.

Run on the memory and embedded engines in every run, and on OpenSearch where a server is given (CI). On
6f9050f it finds defects 1, 2 and 4 of issue 37 within its examples; defect 3 needs two processes compacting at
once and has a test of its own (test_memory_engine).
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from llmql.connectors.base import Record
from llmql.connectors.corpus import SourceDoc, content_hash, written_as
from llmql.connectors.registry import open_backend
from llmql.connectors.sync import SyncConfig, sync
from tests.connectors.test_resume import backend_class

IDS = st.sampled_from(["d1", "d2", "d3", "d4", "d5", "x", "x\x00", "\x00", "a/b", "..", "ünï", "q'\""])
TEXTS = st.sampled_from(["kelp lagoon", "granite ridge", "amber study", "basalt note", "cold water kelp"])


@dataclass
class Model:
    """What an index must hold: `must` (id -> content hash) exactly, and nothing outside `must` and `may`."""

    must: dict[str, str] = field(default_factory=dict)
    may: set[str] = field(default_factory=set)  # written once and not deleted since: allowed to remain

    def completed(self, corpus: dict[str, str], exact: bool, keep: set[str] = frozenset()) -> None:
        """A sync that ran to the end: the corpus is held; `exact` (recreate, delete-missing) leaves nothing else
        but the `keep` ids (the documents of skipped lines)."""
        external = {i: h for i, h in self.must.items() if i.startswith("w-")}
        if exact:
            self.may = set(corpus) | (keep & (self.may | set(self.must)))
            self.must = dict(corpus)
        else:
            self.may |= set(self.must) | set(corpus)
            self.must = {**external, **corpus}

    def interrupted(self, corpus: dict[str, str]) -> None:
        """A sync killed part-way: any corpus document may be there or not, in its old version or its new."""
        self.may |= set(self.must) | set(corpus)
        self.must = {i: h for i, h in self.must.items() if i.startswith("w-")}


class Interrupt(BaseException):
    pass


class IndexMachine(RuleBasedStateMachine):
    engine: tuple[str, str]  # (backend, location); set by the test
    models: tuple  # (encoder, scorer) loaded once

    def __init__(self):
        super().__init__()
        self.root = self.work / uuid.uuid4().hex[:8]
        self.root.mkdir(parents=True)
        self.location = self.engine[1] if self.engine[0] == "opensearch" else str(self.root / "index")
        self.index = f"llmql-model-{uuid.uuid4().hex[:8]}"
        self.alias = f"{self.index}-live"
        self.corpus: dict[str, tuple[str, str]] = {}  # id -> (title, text), in file order
        self.docs, self.served = Model(), Model()
        self.killed = False
        self.external = 0

    # -- helpers ------------------------------------------------------------------------------------------------
    def hashes(self) -> dict[str, str]:
        stored_as = written_as(self.models[0].identity, "fp16")  # the machine's syncs keep fp16 [E] states
        return {i: content_hash(SourceDoc(0, i, t, x), stored_as) for i, (t, x) in self.corpus.items()}

    def write_corpus(self, bad: list[str] = ()) -> str:
        path = self.root / "corpus.jsonl"
        rows = [json.dumps({"_id": i, "title": t, "text": x}) for i, (t, x) in self.corpus.items()]
        path.write_text("\n".join([*bad, *rows]) + "\n", encoding="utf-8")
        return str(path)

    def run(self, kill_at: int | None = None, bad: list[str] = (), kill_at_refresh: bool = False, **options):
        cfg = SyncConfig(
            corpus=self.write_corpus(bad),
            model="unused",
            backend=self.engine[0],
            url=self.location,
            index=self.index,
            batch_size=2,
            end_states="fp16",
            on_error="skip" if bad else "fail",
            failures_file=str(self.root / "failures.jsonl"),
            **options,
        )
        cls = backend_class(self.engine[0])
        original, calls = cls.upsert, []

        def upsert(handle, index, records, **kwargs):
            calls.append(1)
            if kill_at is not None and len(calls) == kill_at:
                raise Interrupt
            return original(handle, index, records, **kwargs)

        def refresh(handle, index):  # killed after the writes and deletions, before the engine's refresh
            raise Interrupt

        own_refresh = cls.__dict__.get("refresh")
        cls.upsert = upsert
        if kill_at_refresh:
            cls.refresh = refresh
        try:
            report = sync(cfg, progress=False, encoder=self.models[0], ql_scorer=self.models[1])
        except Interrupt:
            return None
        finally:
            cls.upsert = original
            if own_refresh is not None:
                cls.refresh = own_refresh
            elif kill_at_refresh:
                del cls.refresh  # the inherited one again
        assert report.verified.ok, report.verified
        return report

    def held(self, name: str) -> dict[str, str]:
        """What a fresh reader of `name` sees."""
        if self.engine[0] == "memory":
            from llmql.connectors import memory

            memory._STORES.clear()
        backend = open_backend(self.engine[0], self.location)
        if backend.resolve(name) is None:
            return {}
        if self.engine[0] == "opensearch":
            backend.refresh(name)  # what a sync killed before its refresh wrote, visible to a search
        return dict(backend.content_hashes(name))

    # -- rules --------------------------------------------------------------------------------------------------
    @initialize(ids=st.lists(IDS, min_size=3, max_size=8, unique=True), text=TEXTS)
    def first_corpus(self, ids, text):
        self.corpus = {i: ("", f"{text} {n}") for n, i in enumerate(ids)}

    @rule(doc_id=IDS, text=TEXTS)
    def add_or_change(self, doc_id, text):
        self.corpus[doc_id] = ("t", f"{text} {doc_id!r}")

    @rule(data=st.data())
    def remove(self, data):
        if len(self.corpus) > 1:
            del self.corpus[data.draw(st.sampled_from(sorted(self.corpus)))]

    @rule(data=st.data())
    def reorder(self, data):
        order = data.draw(st.permutations(sorted(self.corpus)))
        self.corpus = {i: self.corpus[i] for i in order}

    @rule(incremental=st.booleans())
    def plain_sync(self, incremental):
        self.run(incremental=incremental)
        self.docs.completed(self.hashes(), exact=False)
        self.killed = False

    @rule()
    def recreate(self):
        self.run(recreate=True)
        self.docs.completed(self.hashes(), exact=True)
        self.killed = False

    @rule(kill_at=st.integers(2, 4))
    def killed_sync(self, kill_at):
        if self.run(kill_at=kill_at) is None:
            self.docs.interrupted(self.hashes())
            self.killed = True
        else:
            self.docs.completed(self.hashes(), exact=False)

    @precondition(lambda self: self.killed)
    @rule(emptied=st.booleans())
    def resume(self, emptied):
        if emptied:  # the index deleted from outside before the resume
            open_backend(self.engine[0], self.location).drop_index(self.index)
            self.docs = Model(must={}, may=set())
        self.run(resume=True)
        self.docs.completed(self.hashes(), exact=False)
        self.killed = False

    @precondition(lambda self: self.killed)
    @rule(doc_id=IDS, text=TEXTS, data=st.data())
    def edit_then_resume(self, doc_id, text, data):
        """The corpus edited between the kill and the resume (a line added, the order changed)."""
        self.add_or_change(doc_id, text)
        self.reorder(data)
        self.resume(emptied=False)

    @rule(unreadable=st.integers(0, 2), blank=st.booleans())
    def delete_missing(self, unreadable, blank):
        bad = ['{"_id": "broken", "text": '] * unreadable
        known = sorted(set(self.docs.must) | self.docs.may - set(self.corpus))
        keep = set()
        if blank and known:
            bad.append(json.dumps({"_id": known[0], "title": "", "text": "  "}))
            keep = {known[0]}
        report = self.run(delete_missing=True, bad=bad)
        assert report.skipped_ids == sorted(keep)
        if unreadable:  # which documents left is unknown: nothing deleted
            self.docs.completed(self.hashes(), exact=False)
        else:
            self.docs.completed(self.hashes(), exact=True, keep=keep)
        self.killed = False

    @rule(data=st.data())
    def delete_missing_killed_before_its_refresh(self, data):
        """A document leaves the corpus; the deletion lands but the log never compacts: a reader replays the
        deletion itself (the memory engine's delete segments lost trailing NULs: 'x\\x00' deleted 'x')."""
        self.remove(data)
        if self.run(delete_missing=True, kill_at_refresh=True) is None:
            self.docs.completed(self.hashes(), exact=True)
            self.killed = True

    @rule(kill_at=st.one_of(st.none(), st.integers(1, 3)))
    def alias_sync(self, kill_at):
        if self.run(kill_at=kill_at, alias=self.alias) is not None:
            self.served = Model(must=self.hashes())

    @rule()
    def second_writer(self):
        """Another writer's document lands between syncs; only --recreate or --delete-missing may remove it."""
        self.external += 1
        doc_id, dim = f"w-{self.external}", self.models[0].dim
        backend = open_backend(self.engine[0], self.location)
        backend.open_index(self.index, dim, self.models[0].identity, create=True)
        backend.upsert(self.index, [Record(doc_id, "", "other writer", np.ones(dim, np.float32) / dim**0.5, "ext")])
        backend.refresh(self.index)
        self.docs.must[doc_id] = "ext"

    # -- the contract -------------------------------------------------------------------------------------------
    @invariant()
    def the_index_holds_what_the_model_says(self):
        held = self.held(self.index)
        for doc_id, content in self.docs.must.items():
            assert held.get(doc_id) == content, (doc_id, held.get(doc_id), content)
        extra = set(held) - set(self.docs.must) - self.docs.may
        assert not extra, extra

    @invariant()
    def the_alias_serves_a_whole_generation(self):
        if self.served.must:
            assert self.held(self.alias) == self.served.must

    def teardown(self):
        if self.engine[0] == "opensearch":
            backend = open_backend("opensearch", self.location)
            for name in (self.alias, self.index):
                target = backend.resolve(name)
                if target:
                    backend.drop_index(target)
        shutil.rmtree(self.root, ignore_errors=True)


EXAMPLES = {"memory": 150, "embedded": 60, "opensearch": 25}


@pytest.mark.parametrize("engine", ["memory", "embedded", pytest.param("opensearch", marks=pytest.mark.live)])
def test_random_sync_sequences_keep_the_index_as_the_model_says(engine, tiny_export, tmp_path):
    from llmql.export.runtime import OnnxEncoder, OnnxQLScorer
    from tests.conftest import server_url

    location = server_url("opensearch") if engine == "opensearch" else str(tmp_path)
    machine = type(f"{engine}Machine", (IndexMachine,), {})
    machine.engine = (engine, location)
    machine.work = tmp_path
    machine.models = (OnnxEncoder.from_dir(tiny_export), OnnxQLScorer.from_dir(tiny_export))
    limits = settings(
        max_examples=EXAMPLES[engine],
        stateful_step_count=8,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    run_state_machine_as_test(machine, settings=limits)
