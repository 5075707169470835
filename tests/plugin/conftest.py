import uuid

import pytest

from llmql.connectors.registry import open_backend
from llmql.connectors.sync import SyncConfig, sync
from llmql.export.convert import ExportConfig, export_model


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
            ql_cache="fp16",
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
    cfg = SyncConfig(corpus=str(toy_beir), model=str(ql_export), url=location, index="docs", ql_cache="fp16")
    assert sync(cfg, progress=False).ok
    return open_backend("embedded", location), "docs"
