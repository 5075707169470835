"""The one device policy: names, LOCAL_RANK, clear refusals before any work, and the process environment."""

import os

import pytest

from llmql.train.core.device import DeviceError, quiet_accelerator_libraries, resolve_device


@pytest.mark.parametrize(
    ("spec", "count", "rank", "expected"),
    [
        ("auto", 0, "0", "cpu"),
        ("auto", 2, "1", "cuda:1"),
        ("auto", 2, "3", "cuda:1"),  # more processes than GPUs: they share, round-robin
        ("cpu", 2, "0", "cpu"),
        (" CPU ", 0, "0", "cpu"),
        ("cuda", 4, "2", "cuda:2"),
        ("cuda:1", 2, "0", "cuda:1"),
        (None, 0, "0", "cpu"),
    ],
)
def test_device_resolution(spec, count, rank, expected, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", rank)
    assert resolve_device(spec, count=count) == expected


@pytest.mark.parametrize(
    ("spec", "count", "message"),
    [
        ("cuda", 0, "no CUDA device is available"),
        ("cuda:0", 0, "no CUDA device is available"),
        ("cuda:2", 2, "has 2 CUDA device(s)"),
        ("gpu", 1, "choose auto, cpu, cuda or cuda:N"),
        ("cuda:x", 1, "choose auto"),
    ],
)
def test_devices_that_are_not_there_are_named(spec, count, message):
    with pytest.raises(DeviceError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        resolve_device(spec, count=count)
    assert repr(spec) in str(err.value)


def test_auto_on_this_machine_is_consistent_with_torch():
    import torch

    assert resolve_device("auto").startswith("cuda") == torch.cuda.is_available()


def test_entry_points_keep_jax_off_the_gpu(monkeypatch):
    for name in ("USE_FLAX", "USE_JAX", "XLA_PYTHON_CLIENT_PREALLOCATE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("USE_TF", "1")  # a user's own choice is kept
    quiet_accelerator_libraries()
    assert os.environ["USE_FLAX"] == "0" and os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert os.environ["USE_TF"] == "1"


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the refusal on a host without CUDA; this one has it"
)
def test_sync_and_search_refuse_a_missing_gpu_before_any_work(tiny_export, toy_beir, tmp_path):
    from click.testing import CliRunner

    from llmql.connectors.cli import main as sync_cli
    from llmql.plugin.search_cli import search_main

    index_dir = tmp_path / "index"
    result = CliRunner().invoke(
        sync_cli, [str(toy_beir), "--model", str(tiny_export), "--url", str(index_dir), "--device", "cuda", "--quiet"]
    )
    assert result.exit_code == 1 and "device 'cuda': no CUDA device" in result.output
    assert "Traceback" not in result.output and not index_dir.exists()
    searched = CliRunner().invoke(
        search_main, ["kelp", "--url", str(index_dir), "--model", str(tiny_export), "--device", "cuda:0"]
    )
    assert searched.exit_code == 1 and "device 'cuda:0'" in searched.output and not index_dir.exists()


def test_training_defaults_to_bf16_only_where_the_hardware_has_it(monkeypatch):
    """A forced bf16 default made every training step 16x slower on a CPU without native bf16 (emulated
    matmuls in torch's single-threaded fallback GEMM): the default must follow the hardware."""
    import llmql.train.core.device as device
    from llmql.train.core.config import OptimConfig

    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    assert device.resolve_bf16(OptimConfig().bf16, "cpu") is False
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)
    assert device.resolve_bf16(OptimConfig().bf16, "cpu") is True
    assert device.resolve_bf16(False, "cpu") is False  # an explicit choice is kept


@pytest.mark.parametrize(
    ("affinity", "env", "expected"),
    [
        ({0}, {}, 1),  # pinned to one core (taskset, a container's cpuset) on a larger machine
        ({0, 1, 2, 3}, {"LOCAL_WORLD_SIZE": "2"}, 2),  # two launcher processes share the usable cores
        ({0, 1, 2}, {"LOCAL_WORLD_SIZE": "8"}, 1),
        ({0}, {"LLMQL_THREADS": "3"}, 3),  # told
    ],
)
def test_model_threads_follow_the_cores_this_process_may_use(affinity, env, expected, monkeypatch):
    from llmql.train.core import cpu

    monkeypatch.delenv("LLMQL_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: affinity, raising=False)
    assert cpu.cpu_threads() == expected
