import pytest

from llmql.export.convert import ExportConfig, export_model


@pytest.fixture(scope="session")
def llama_export(tiny_llama, toy_beir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "llama"
    return export_model(
        ExportConfig(
            model=str(tiny_llama),
            out=str(out),
            quantize="int8",
            ql_scorer=True,
            opensearch_bundle=True,
            validation_data=str(toy_beir),
        )
    )
