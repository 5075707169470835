import uuid

import pytest

from llmql.connectors.registry import open_backend


@pytest.fixture
def backend(backend_spec):
    name, location = backend_spec
    handle = open_backend(name, location)
    created: list[str] = []
    handle.test_index = lambda: created.append(f"llmql-test-{uuid.uuid4().hex[:10]}") or created[-1]
    yield handle
    for index in created:
        handle.drop_index(index)


def crash_on_upsert(monkeypatch, call: int) -> None:
    """Make the embedded backend's `call`-th write raise KeyboardInterrupt (a crash mid-sync); undo with
    monkeypatch.undo()."""
    import llmql.connectors.embedded as embedded

    original, calls = embedded.EmbeddedBackend.upsert, []

    def crashing(self, index, records, **kwargs):
        calls.append(len(records))
        if len(calls) == call:
            raise KeyboardInterrupt("simulated crash")
        return original(self, index, records, **kwargs)

    monkeypatch.setattr(embedded.EmbeddedBackend, "upsert", crashing)
