import socket
import threading
import time
import uuid

import pytest

from llmql.connectors.registry import open_backend
from llmql.connectors.sync import SyncConfig, sync
from llmql.export.convert import ExportConfig, export_model
from llmql.export.runtime import OnnxEncoder, OnnxQLScorer
from llmql.plugin.service import ServiceConfig, create_app


@pytest.fixture(scope="session")
def ql_export(tiny_llama, tmp_path_factory):
    return export_model(
        ExportConfig(model=str(tiny_llama), out=str(tmp_path_factory.mktemp("plugin") / "export"), ql_scorer=True)
    )


@pytest.fixture
def synced(backend_spec, toy_beir, ql_export):
    """(backend, index) holding the toy corpus with cached [E] states."""
    name, location = backend_spec
    index = f"llmql-plugin-{uuid.uuid4().hex[:8]}"
    report = sync(
        SyncConfig(
            corpus=str(toy_beir),
            model=str(ql_export),
            backend=name,
            url=location,
            index=index,
            end_states="fp16",
            runtime="onnx",
        ),
        progress=False,
    )
    assert report.ok
    backend = open_backend(name, location)
    yield backend, index
    backend.drop_index(index)


@pytest.fixture
def synced_embedded(tmp_path, toy_beir, ql_export):
    """(backend, index): the toy corpus with cached [E] states in a fresh embedded engine."""
    location = str(tmp_path / "db")
    cfg = SyncConfig(corpus=str(toy_beir), model=str(ql_export), url=location, index="docs", end_states="fp16")
    assert sync(cfg, progress=False).ok
    return open_backend("embedded", location), "docs"


@pytest.fixture(scope="session")
def service(ql_export, toy_beir, tmp_path_factory):
    """A real `llmql serve` (uvicorn on a free local port) over the toy corpus with cached [E] states; its URL."""
    import uvicorn

    root = tmp_path_factory.mktemp("compat")
    sync(SyncConfig(corpus=str(toy_beir), model=str(ql_export), url=str(root), index="docs", end_states="fp16"), False)
    app = create_app(
        ServiceConfig(url=str(root), index="docs"),
        OnnxEncoder.from_dir(ql_export),
        OnnxQLScorer.from_dir(ql_export),
        open_backend("embedded", str(root)),
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
