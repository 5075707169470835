"""Two gloo processes on the CPU: each query must see the other process's passages as negatives."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from llmql.train.distributed import gather_with_grad
from llmql.train.losses import info_nce


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        # rank r owns passages [r+1, r+1] (positive) and [-(r+1), 0] (negative), groups of 2
        local = torch.tensor([[rank + 1.0, rank + 1.0], [-(rank + 1.0), 0.0]], requires_grad=True)
        gathered, offset = gather_with_grad(local)
        query = torch.tensor([[1.0, 0.0]])
        loss = info_nce(query, gathered, group_size=2, temperature=1.0, offset=offset)
        loss.backward()
        results[rank] = (gathered.detach().tolist(), offset, local.grad.abs().sum().item(), loss.item())
    finally:
        dist.destroy_process_group()


def test_gather_adds_the_other_process_negatives():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(_free_port(), results), nprocs=2, join=True)
    rows0, offset0, grad0, loss0 = results[0]
    rows1, offset1, grad1, _ = results[1]
    expected = [[1.0, 1.0], [-1.0, 0.0], [2.0, 2.0], [-2.0, 0.0]]
    assert rows0 == expected and rows1 == expected  # both processes score against all four passages
    assert (offset0, offset1) == (0, 2)  # each query's positive is its own process's rows
    assert grad0 > 0 and grad1 > 0  # gradients reach every process's own passages
    # With only local passages the loss of rank 0 would be over 2 candidates; with gathering it is over 4.
    local_only = info_nce(torch.tensor([[1.0, 0.0]]), torch.tensor(expected[:2]), 2, 1.0)
    assert loss0 > local_only.item()


def test_two_process_training_under_torchrun(tiny_llama, toy_beir, tmp_path):
    """The real trainer under torchrun with two gloo processes: it runs, and rank 0 alone writes the output."""
    import subprocess
    import sys
    from pathlib import Path

    bin_dir = Path(sys.executable).parent
    out = tmp_path / "ddp"
    result = subprocess.run(
        [
            str(bin_dir / "torchrun"),
            "--nproc_per_node",
            "2",
            "--master_port",
            str(_free_port()),
            str(bin_dir / "llmql-train"),
            "contrastive",
            "--model",
            str(tiny_llama),
            "--data",
            str(toy_beir),
            "--out",
            str(out),
            "--max-steps",
            "3",
            "--group-size",
            "2",
            "--lora-r",
            "4",
            "--warmup",
            "1",
            "--batch-size",
            "2",
            "--bf16",
            "off",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("retriever written") == 1
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and (out / "llmql.json").is_file()


def test_process_state_orders_ranks_under_torchrun_on_the_cpu(tmp_path):
    """Under torchrun on a CPU host, rank 0 finishes inside `main_process_first` before the others enter it, so a
    file rank 0 writes there (the mined negatives) is complete when the others read it."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "ranks.py"
    script.write_text(
        "import sys, time\n"
        "from pathlib import Path\n"
        "from llmql.train.distributed import process_state\n"
        "state = process_state()\n"
        "shared = Path(sys.argv[1])\n"
        "with state.main_process_first():\n"
        "    if state.is_main_process:\n"
        "        time.sleep(1.0)\n"
        "        shared.write_text('written')\n"
        "    seen = shared.read_text() if shared.exists() else 'missing'\n"
        "print(f'rank {state.process_index} of {state.num_processes}: {seen}', flush=True)\n"
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "torchrun"),
            "--nproc_per_node",
            "2",
            "--master_port",
            str(_free_port()),
            str(script),
            str(tmp_path / "shared.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(result.stdout.split("\n")[:2]) == ["rank 0 of 2: written", "rank 1 of 2: written"]
