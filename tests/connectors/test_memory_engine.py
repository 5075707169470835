"""The memory engine on disk with several processes: one writer at a time, compactions that lose nothing, ids
stored losslessly, temporary files cleaned up, and a corrupt segment named with its remedy (never unpickled)."""

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from llmql.connectors import memory
from llmql.connectors.base import Record
from llmql.connectors.memory_log import CorruptSegment
from llmql.connectors.registry import open_backend


def records(ids, dim: int = 4) -> list[Record]:
    return [Record(i, "t", f"text of {i}", np.eye(dim, dtype=np.float32)[n % dim], f"h-{i}") for n, i in enumerate(ids)]


def fresh_reader(location) -> list[str]:
    """The ids another process sees: no state shared with this one."""
    code = (
        "import json; from llmql.connectors.registry import open_backend; "
        f"b = open_backend('memory', {str(location)!r}, device='cpu'); "
        "print(json.dumps(sorted(i for i, _ in b.content_hashes('docs'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    from pathlib import Path
    from llmql.connectors import memory_log
    from llmql.connectors.base import Record
    from llmql.connectors.registry import open_backend
    location, prefix, slow = sys.argv[1], sys.argv[2], float(sys.argv[3])
    backend = open_backend("memory", location, device="cpu")
    backend.open_index("docs", 4, "m")
    for half in (range(5), range(5, 10)):  # two segments: a compaction has something to do
        docs = [Record(f"{prefix}{i}", "t", "x", np.eye(4, dtype=np.float32)[i % 4], "h") for i in half]
        backend.upsert("docs", docs)
    compact = memory_log.SegmentLog.compact
    def slowed(self, *args, **kwargs):  # a large index's compaction, standing in
        Path(location, prefix + ".compacting").touch()
        time.sleep(slow)
        return compact(self, *args, **kwargs)
    memory_log.SegmentLog.compact = slowed
    backend.refresh("docs")
""")


def test_overlapping_compactions_of_two_writers_lose_no_confirmed_write(tmp_path):
    """Issue 37's defect 3: B compacts slowly; A upserts and compacts meanwhile. Both writers' documents survive."""
    location = tmp_path / "memory"
    open_backend("memory", str(location)).open_index("docs", 4, "m")
    slow = subprocess.Popen([sys.executable, "-c", WRITER, str(location), "b", "3"])
    deadline = time.time() + 60
    while not (location / "b.compacting").exists():
        assert slow.poll() is None and time.time() < deadline
        time.sleep(0.02)
    subprocess.run([sys.executable, "-c", WRITER, str(location), "a", "0"], check=True, timeout=120)
    assert slow.wait(timeout=120) == 0
    assert fresh_reader(location) == sorted([f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)])


def test_a_second_writer_waits_and_says_so(tmp_path, caplog):
    from llmql.connectors.memory_log import writer_lock

    directory = tmp_path / "index"
    directory.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from llmql.connectors.memory_log import writer_lock\n"
            "with writer_lock(Path(sys.argv[1])):\n    Path(sys.argv[1], 'held').touch(); time.sleep(1.5)",
            str(directory),
        ]
    )
    deadline = time.time() + 60
    while not (directory / "held").exists():
        assert holder.poll() is None and time.time() < deadline
        time.sleep(0.02)
    start = time.perf_counter()
    with writer_lock(directory):
        waited = time.perf_counter() - start
    holder.wait(timeout=30)
    assert waited > 0.5
    assert "another process is writing this index; waiting for it" in caplog.text


@pytest.mark.parametrize("doc_id", ["abc\x00", "\x00", "tab\tand\nnewline", "ünï 日本 🙂", "  spaced  "])
def test_ids_replay_exactly_as_written_in_a_fresh_reader(tmp_path, doc_id):
    """Defect 4: numpy str arrays dropped trailing NULs, so a delete of 'abc\\x00' replayed as a delete of 'abc'."""
    location = tmp_path / "memory"
    backend = open_backend("memory", str(location))
    backend.open_index("docs", 4, "m")
    plain = doc_id.rstrip("\x00")
    plain = plain if plain and plain != doc_id else "plain"
    backend.upsert("docs", records([doc_id, plain]))
    assert backend.delete("docs", [doc_id]) == 1
    assert fresh_reader(location) == [plain]
    backend.refresh("docs")  # the snapshot keeps it too
    assert fresh_reader(location) == [plain]


def test_compaction_removes_the_temporary_files_of_a_killed_writer(tmp_path):
    location = tmp_path / "memory"
    backend = open_backend("memory", str(location))
    backend.open_index("docs", 4, "m")
    backend.upsert("docs", records(["a", "b"]))
    orphan = location / "docs" / ".00000000000000000001-00000001-00000000-upsert.npz.tmp"
    orphan.write_bytes(b"half a segment")
    backend.refresh("docs")
    assert not orphan.exists()
    assert fresh_reader(location) == ["a", "b"]


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda path: path.write_bytes(path.read_bytes()[:40]), "BadZipFile"),  # truncated
        (lambda path: path.write_bytes(b""), "an empty file"),
        (lambda path: path.write_bytes(b"\x80\x04junk that is not a segment" * 4), "corrupt"),
    ],
)
def test_a_corrupt_segment_is_named_with_its_remedy_and_never_unpickled(tmp_path, damage, said):
    location = tmp_path / "memory"
    backend = open_backend("memory", str(location))
    backend.open_index("docs", 4, "m")
    backend.upsert("docs", records(["a"]))
    backend.upsert("docs", records(["b"]))
    segment = sorted((location / "docs").glob("*-upsert.npz"))[-1]
    damage(segment)
    memory._STORES.clear()  # a new process's view
    with pytest.raises(CorruptSegment) as caught:
        open_backend("memory", str(location)).count("docs")
    message = str(caught.value)
    assert str(segment) in message and said in message and "upsert segment" in message
    assert "--incremental" in message and "unsafely" not in message and "pickle" not in message.lower()


def test_a_corrupt_segment_through_the_cli_is_one_line_and_exit_1(tmp_path):
    location = tmp_path / "memory"
    backend = open_backend("memory", str(location))
    backend.open_index("docs", 4, "m")
    backend.upsert("docs", records(["a"]))
    next((location / "docs").glob("*-upsert.npz")).write_bytes(b"")
    search = str(__import__("pathlib").Path(sys.executable).parent / "llmql-search")
    done = subprocess.run(
        [search, "kelp", "--backend", "memory", "--url", str(location), "--index", "docs", "--mode", "bm25"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "corrupt" in done.stderr and "--incremental" in done.stderr


def test_a_write_that_waited_for_the_lock_is_not_undone_by_the_one_it_waited_for(tmp_path, monkeypatch):
    """Writer A read the index, then writer B (another process) wrote id x while A waited for the lock; A's later
    write of x must win, in A's view, in its compaction and for a fresh reader (A used to apply B's older
    segment on top of its own at the compaction, and the snapshot kept B's x)."""
    from llmql.connectors import memory_log

    location = tmp_path / "memory"
    backend = open_backend("memory", str(location))
    backend.open_index("docs", 4, "m")
    backend.upsert("docs", records(["a", "x"]))
    other = textwrap.dedent(f"""
        import numpy as np
        from llmql.connectors.base import Record
        from llmql.connectors.registry import open_backend
        b = open_backend("memory", {str(location)!r}, device="cpu")
        b.upsert("docs", [Record("x", "t", "from B", np.eye(4, dtype=np.float32)[1], "h-B")])
    """)
    real = memory_log.writer_lock
    calls = []

    def contended(directory):  # B lands its write just before A gets the lock
        if not calls:
            calls.append(1)
            subprocess.run([sys.executable, "-c", other], check=True)
        return real(directory)

    monkeypatch.setattr(memory, "writer_lock", contended)
    backend.upsert("docs", [Record("x", "t", "from A", np.eye(4, dtype=np.float32)[2], "h-A")])
    monkeypatch.undo()
    assert backend.fetch("docs", ["x"])["x"].content_hash == "h-A"
    backend.refresh("docs")
    memory._STORES.clear()
    fresh = dict(open_backend("memory", str(location)).content_hashes("docs"))
    assert fresh == {"a": "h-a", "x": "h-A"}


def test_a_dropped_index_is_not_brought_back_by_a_late_writer(tmp_path):
    location = tmp_path / "memory"
    backend = open_backend("memory", str(location))
    backend.open_index("docs", 4, "m")
    backend.upsert("docs", records(["a"]))
    target = backend._index("docs")
    backend.drop_index("docs")
    from llmql.connectors.base import BackendError

    with pytest.raises(BackendError, match="dropped"):
        backend._log(target, "upsert", {})
    assert not (location / "docs").exists()
