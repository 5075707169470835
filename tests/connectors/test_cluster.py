"""A real three-node OpenSearch cluster (`scripts/search-server start opensearch-cluster`) losing a node in the
middle of a sync: a data node, then the node holding the new generation's primary shard. The sync finishes or
stops with a clear error, `--resume` (with the node still down) ends with exactly the corpus once, ids and content
hashes equal to a sync without faults, the alias never points at a half-built generation, searches keep
answering while the cluster is yellow, and the cluster turns green again when the node is back."""

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from llmql.connectors.corpus import content_hash, read_corpus
from llmql.connectors.registry import open_backend
from llmql.connectors.sync import SyncConfig, state_path
from llmql.export.manifest import read_manifest
from llmql.export.runtime import export_identity
from tests.conftest import server_url
from tests.toydata import big_corpus

pytestmark = [pytest.mark.live, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SYNC = str(Path(sys.executable).parent / "llmql-sync")
SERVERS = str(ROOT / "scripts" / "search-server")
DOCUMENTS = 20_000


@pytest.fixture(scope="module")
def cluster():
    url = server_url("opensearch-cluster")
    yield url
    subprocess.run([SERVERS, "start", "opensearch-cluster"], check=True, capture_output=True)  # leave it whole


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return big_corpus(tmp_path_factory.mktemp("cluster") / "corpus.jsonl", DOCUMENTS)


def health(backend) -> dict:
    return backend._request("GET", "/_cluster/health")


def node_of_primary(backend, index: str) -> int:
    shards = backend._request("GET", f"/_cat/shards/{index}", params={"format": "json"})
    return int(next(s for s in shards if s["prirep"] == "p" and s["state"] == "STARTED")["node"].split("-")[1])


class Watch:
    """While the sync runs: which index the alias points at and its count (never a half-built generation), and
    whether BM25 searches through the alias keep answering."""

    def __init__(self, backend, alias: str, before: str):
        self.backend, self.alias, self.before = backend, alias, before
        self.seen, self.failed_searches, self.searches = set(), 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        reader = open_backend("opensearch", self.backend.location)
        while not self.stop.wait(0.3):
            try:
                target = reader.resolve(self.alias)
                self.seen.add(target)
                self.searches += 1
                reader.bm25(self.alias, "kelp lagoon", 5)
            except Exception:  # counted, and asserted on below
                self.failed_searches += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def run_sync(corpus: Path, export: Path, url: str, alias: str, *extra: str) -> subprocess.Popen:
    command = [SYNC, str(corpus), "--model", str(export), "--backend", "opensearch", "--url", url, "--alias", alias]
    command += ["--batch-size", "500", "--runtime", "onnx", "--quiet", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_progress(state: Path, line: int, process: subprocess.Popen) -> None:
    deadline = time.time() + 300
    while not (state.is_file() and json.loads(state.read_text())["committed_line"] >= line):
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "the sync made no progress"
        time.sleep(0.05)


def expected_hashes(corpus: Path, export: Path) -> dict[str, str]:
    identity = export_identity(read_manifest(export))
    return {d.id: content_hash(d, identity) for d in read_corpus(corpus)}


@pytest.mark.parametrize("victim", ["data node", "primary", "data node and the sync"])
def test_a_node_killed_mid_sync_loses_no_document(cluster, corpus, tiny_export, tmp_path, victim):
    backend = open_backend("opensearch", cluster)
    alias = f"llmql-cluster-{uuid.uuid4().hex[:6]}"
    first = run_sync(big_corpus(tmp_path / "small.jsonl", 200), tiny_export, cluster, alias)
    assert first.wait(300) == 0, first.communicate()
    before = backend.resolve(alias)
    state = state_path(
        SyncConfig(corpus=str(corpus), model=str(tiny_export), backend="opensearch", url=cluster, alias=alias)
    )
    watch = Watch(backend, alias, before)
    process = run_sync(corpus, tiny_export, cluster, alias)
    try:
        wait_for_progress(state, 4000, process)
        generation = json.loads(state.read_text())["target"]
        node = node_of_primary(backend, generation) if victim == "primary" else 3
        subprocess.run([SERVERS, "kill", "opensearch-cluster", str(node)], check=True)
        killed_at = json.loads(state.read_text())["committed_line"]
        if victim == "data node and the sync":  # the sync dies too: resumed below with the node still down
            wait_for_progress(state, killed_at + 2000, process)
            process.kill()
        _, err = process.communicate(timeout=900)
        if process.returncode != 0:  # stopped (clearly, unless killed), then resumed with the node still down
            assert process.returncode == -9 or (err.strip() and "Traceback" not in err), err
            resumed = run_sync(corpus, tiny_export, cluster, alias, "--resume")
            _, err = resumed.communicate(timeout=900)
            assert resumed.returncode == 0, err
        assert health(backend)["status"] in ("yellow", "green")
    finally:
        watch.close()
        if process.poll() is None:
            process.kill()
    after = backend.resolve(alias)
    assert after not in (None, before) and watch.seen <= {before, after}  # the old generation, then the whole new one
    stored = dict(backend.content_hashes(alias))
    assert stored == expected_hashes(corpus, tiny_export)  # every document once, as a sync without faults has it
    assert backend.count(alias) == DOCUMENTS
    assert watch.searches > 0 and watch.failed_searches == 0  # searches kept answering while a node was down
    started = time.time()
    subprocess.run([SERVERS, "start", "opensearch-cluster"], check=True, capture_output=True)
    green = backend._request("GET", "/_cluster/health?wait_for_status=green&timeout=120s")  # (`timeout` as a
    # param would be the client's own)
    assert green["status"] == "green" and green["number_of_nodes"] == 3
    record = {"victim": victim, "node": node, "killed_after_line": killed_at, "resumed": process.returncode != 0}
    print(json.dumps({**record, "searches": watch.searches, "green_again_s": round(time.time() - started, 1)}))
    backend.drop_index(after)
    backend.drop_index(before)
