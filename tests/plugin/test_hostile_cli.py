"""Every command's numeric and path options under generated hostile values (NaN, infinities, zero, negative,
huge, not a number, missing paths): a clear message naming the option, exit status 2, nothing written and no
directory created. Then F1-F9 of the hostile-user probe, each pinned."""

import math
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmql.connectors.cli import main as sync_cli
from llmql.export.cli import main as export_cli
from llmql.plugin.cli import main as llmql_cli
from llmql.plugin.search_cli import eval_main, search_main
from llmql.train.cli import main as train_cli

# option -> (command, arguments that get past every other check, whether a value is valid for it)
Valid = dict[str, object]


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _int_in(low: int, high: float = math.inf):
    def valid(text: str) -> bool:
        try:
            value = int(text)
        except ValueError:
            return False
        return low <= value <= high

    return valid


def _float_in(low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False):
    def valid(text: str) -> bool:
        value = _number(text)
        if value is None:
            return False
        return (value > low if low_open else value >= low) and (value < high if high_open else value <= high)

    return valid


def _commands(root: Path) -> dict:
    data, out = str(root / "data"), str(root / "out")
    train = ["ql", "--model", "m", "--data", data, "--out", out]
    stage2 = ["contrastive", "--model", "m", "--data", data, "--out", out]
    search = ["q", "--url", str(root / "index")]
    evaluate = ["--data", data, "--url", str(root / "index")]
    return {
        (train_cli, *train, "--lr"): _float_in(0, 1, low_open=True),
        (train_cli, *train, "--epochs"): _float_in(0, low_open=True),
        (train_cli, *train, "--batch-size"): _int_in(1),
        (train_cli, *train, "--grad-accum"): _int_in(1),
        (train_cli, *train, "--max-steps"): _int_in(1),
        (train_cli, *train, "--save-every"): _int_in(1),
        (train_cli, *train, "--max-passage-tokens"): _int_in(1, 32_768),
        (train_cli, *train, "--max-query-tokens"): _int_in(1, 32_768),
        (train_cli, *train, "--mask-prob"): _float_in(0, 1),
        (train_cli, *train, "--lora-r"): _int_in(1, 1024),
        (train_cli, *train, "--num-workers"): _int_in(0, 64),
        (train_cli, *stage2, "--temperature"): _float_in(0, 100, low_open=True),
        (train_cli, *stage2, "--group-size"): _int_in(1, 1024),
        (train_cli, *stage2, "--lora-dropout"): _float_in(0, 1, high_open=True),
        (train_cli, *stage2, "--grad-cache-chunk"): _int_in(1),
        (export_cli, "m", str(root / "export"), "--int8-min-cosine"): _float_in(-1, 1),
        (export_cli, "m", str(root / "export"), "--opset"): _int_in(14, 21),
        (sync_cli, data, "--model", "m", "--url", str(root / "index"), "--batch-size"): _int_in(1, 100_000),
        (sync_cli, data, "--model", "m", "--url", str(root / "index"), "--max-padded-tokens"): _int_in(1),
        (sync_cli, data, "--model", "m", "--url", str(root / "index"), "--chunk-tokens"): _int_in(1),
        (sync_cli, data, "--model", "m", "--url", str(root / "index"), "--chunk-overlap"): _int_in(0),
        (search_main, *search, "--k"): _int_in(1, 10_000),
        (search_main, *search, "--depth"): _int_in(1, 10_000),
        (search_main, *search, "--ql-weight"): _float_in(0, 1),
        (search_main, *search, "--rerank-depth"): _int_in(0, 1000),
        (eval_main, *evaluate, "--depth"): _int_in(1, 10_000),
        (eval_main, *evaluate, "--mu"): _float_in(0, low_open=True),
        (eval_main, *evaluate, "--max-queries"): _int_in(1),
        (eval_main, *evaluate, "--ql-weight"): lambda text: all(_float_in(0, 1)(x) for x in text.split(",")),
        (llmql_cli, "serve", "--url", str(root / "index"), "--port"): _int_in(1, 65_535),
        (llmql_cli, "serve", "--url", str(root / "index"), "--max-wait-ms"): _float_in(0, 1000),
        (llmql_cli, "serve", "--url", str(root / "index"), "--max-queue"): _int_in(1, 10_000),
        (llmql_cli, "serve", "--url", str(root / "index"), "--max-k"): _int_in(1, 1000),
        (llmql_cli, "serve", "--url", str(root / "index"), "--rerank-depth"): _int_in(1, 1000),
        (llmql_cli, "serve", "--url", str(root / "index"), "--keep-alive-s"): _int_in(1, 3600),
        (llmql_cli, "quickstart", "--data", data, "--budget"): _float_in(0, 1000, low_open=True),
    }


HOSTILE = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "0", "-0", "-1", "-5", "1e309", "", " ", "abc", "1,5"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    (root / "data").mkdir()
    return root


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data(), value=HOSTILE)
def test_hostile_option_values_are_refused_before_anything_happens(root, data, value):
    commands = _commands(root)
    key = data.draw(st.sampled_from(sorted(commands, key=lambda k: (k[0].name, k[1:]))))
    if commands[key](value):
        return  # a valid value would run the command: not this test's business
    command, *args = key
    before = _tree(root)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        result = CliRunner().invoke(command, [*args, value], catch_exceptions=False)
    finally:
        os.chdir(cwd)
    assert result.exit_code == 2, (key, value, result.output)
    assert args[-1] in result.output and "Traceback" not in result.output
    assert _tree(root) == before, (key, value)  # nothing written, no directory created


@pytest.mark.parametrize(
    ("command", "args"),
    [
        (search_main, ["q", "--url", "{missing}"]),
        (eval_main, ["--data", "{data}", "--url", "{missing}", "--runs", "bm25"]),
        (llmql_cli, ["serve", "--url", "{missing}"]),
    ],
)
def test_f9_a_url_that_does_not_exist_is_refused_and_not_created(root, toy_beir, command, args):
    missing = root / "no" / "such" / "index"
    args = [a.format(missing=missing, data=toy_beir) for a in args]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 1 and "no such directory" in result.output and "Traceback" not in result.output
    assert not (root / "no").exists()


@pytest.mark.parametrize(
    ("command", "args", "option"),
    [
        (search_main, ["q", "--rerank-depth", "5", "--ql-weight", "nan"], "--ql-weight"),  # F1
        (llmql_cli, ["serve", "--max-wait-ms", "nan"], "--max-wait-ms"),  # F2
        (llmql_cli, ["serve", "--port", "99999"], "--port"),  # F3
        (llmql_cli, ["serve", "--port", "-1"], "--port"),
        (train_cli, ["ql", "--model", "m", "--data", "{data}", "--out", "{out}", "--lr", "nan"], "--lr"),  # F4
        (train_cli, ["ql", "--model", "m", "--data", "{data}", "--out", "{out}", "--batch-size", "0"], "--batch-size"),
        (train_cli, ["ql", "--model", "m", "--data", "{data}", "--out", "{out}", "--epochs", "nan"], "--epochs"),
        (
            train_cli,
            ["ql", "--model", "m", "--data", "{data}", "--out", "{out}", "--mask-prob", "2"],
            "--mask-prob",
        ),  # F5
        (train_cli, ["ql", "--model", "m", "--data", "{data}", "--out", "{out}", "--max-steps", "-1"], "--max-steps"),
        (
            train_cli,
            ["ql", "--model", "m", "--data", "{data}", "--out", "{out}", "--max-passage-tokens", "0"],
            "--max-passage-tokens",
        ),
        (eval_main, ["--data", "{data}", "--depth", "0"], "--depth"),  # F6
        (eval_main, ["--data", "{data}", "--depth", "-1"], "--depth"),
        (eval_main, ["--data", "{data}", "--mu", "nan"], "--mu"),
        (eval_main, ["--data", "{data}", "--mu", "-5"], "--mu"),
        (eval_main, ["--data", "{data}", "--max-queries", "0"], "--max-queries"),
        (eval_main, ["--data", "{data}", "--runs", ""], "--runs"),
        (search_main, ["q", "--filter", '{"year": {"gte": NaN}}'], "--filter"),  # F7
        (search_main, ["q", "--filter", '{"year": {"lt": Infinity}}'], "--filter"),
        (export_cli, ["m", "{out}", "--int8-min-cosine", "nan"], "--int8-min-cosine"),
    ],
)
def test_the_probes_findings_are_usage_errors(root, command, args, option):
    args = [a.replace("{data}", str(root / "data")).replace("{out}", str(root / "out")) for a in args]
    before = _tree(root)
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 2, result.output
    assert option in result.output and "Traceback" not in result.output
    assert _tree(root) == before


@pytest.mark.parametrize(
    ("command", "args", "old", "new"),
    [
        (sync_cli, ["{data}", "--model", "m", "--url", "{index}", "--ql-cache", "fp16"], "--ql-cache", "--end-states"),
        (
            sync_cli,
            ["{data}", "--model", "m", "--url", "{index}", "--max-batch-tokens", "512"],
            "--max-batch-tokens",
            "--max-padded-tokens",
        ),
        (
            llmql_cli,
            ["serve", "--url", "{index}", "--max-batch-tokens", "512"],
            "--max-batch-tokens",
            "--max-queued-tokens",
        ),
    ],
)
def test_renamed_options_are_still_accepted_for_a_release(root, command, args, old, new, monkeypatch):
    """The old names parse, warn, and hand their value to the new option (the commands then fail later, on the
    model or the index that are not there, not on the option)."""
    import llmql.connectors.sync as sync_module
    import llmql.plugin.service as service_module

    seen = {}
    monkeypatch.setattr(sync_module, "sync", lambda cfg, progress: seen.setdefault("cfg", cfg) and 1 / 0)
    monkeypatch.setattr(service_module, "create_app", lambda cfg: seen.setdefault("cfg", cfg) and 1 / 0)
    args = [a.replace("{data}", str(root / "data")).replace("{index}", str(root / "index")) for a in args]
    result = CliRunner().invoke(command, args)
    assert f"warning: {old} is deprecated and will be removed; use {new}" in result.output
    value = {"--end-states": "fp16", "--max-padded-tokens": 512, "--max-queued-tokens": 512}[new]
    assert getattr(seen["cfg"], new.lstrip("-").replace("-", "_")) == value


def test_serve_keeps_idle_connections_past_a_load_balancers_timeout(root, monkeypatch):
    """uvicorn's own 5 s closed connections under a busy client's pause (requests lost in the soak run); serve
    hands its --keep-alive-s, 75 s unless told, to the server."""
    import uvicorn

    import llmql.plugin.service as service_module

    seen = []
    from types import SimpleNamespace

    from llmql.plugin.metrics import ServiceMetrics

    app = SimpleNamespace(state=SimpleNamespace(metrics=ServiceMetrics()))  # what serve reads of the app
    monkeypatch.setattr(service_module, "create_app", lambda cfg: app)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.append(kw["timeout_keep_alive"]))
    for extra in ([], ["--keep-alive-s", "5"]):
        result = CliRunner().invoke(llmql_cli, ["serve", "--url", str(root / "index"), *extra])
        assert result.exit_code == 0, result.output
    assert seen == [75, 5]
