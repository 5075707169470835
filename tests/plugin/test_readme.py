"""README's "Using it" steps 1-5, run as written (the commands read from the README itself), on a tiny model, the
toy collection and fewer steps: every command succeeds, in order, on what the one before it built. The server
lines run where a server is configured (`live`), the others everywhere."""

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def readme_commands() -> list[str]:
    """The commands of the first bash block under '## Using it', in order (comments and blank lines dropped)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Using it") :]
    block = section[section.index("```bash") + len("```bash") : section.index("```", section.index("```bash") + 7)]
    lines = [line.split("  #")[0].strip() for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_the_readme_walk_covers_steps_one_to_five():
    commands = readme_commands()
    tools = [c.split()[0] for c in commands]
    for tool in ("llmql-train", "llmql-export", "llmql-sync", "llmql", "llmql-search", "llmql-eval"):
        assert tool in tools, tool
    assert any(c.startswith("llmql serve") for c in commands)


@pytest.mark.slow
def test_readme_steps_one_to_five_run_as_written(tiny_llama, toy_beir, tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "D": str(toy_beir)}
    ran = []
    for command in readme_commands():
        if command.startswith(("source ", "D=")):
            continue  # the test's own environment stands in for them
        if "search-server" in command or "--backend opensearch" in command:
            continue  # the servers' lines: test_sync and test_backends run them against real servers
        command = command.replace("smollm2-135m", str(tiny_llama))
        command = re.sub(r"--max-steps \d+", "--max-steps 2", command)
        words = [w.replace("$D", str(toy_beir)) for w in shlex.split(command)]
        if words[:2] == ["llmql", "serve"]:
            serve_briefly(words, env, tmp_path)
        else:
            result = subprocess.run(words, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-3000:])
        ran.append(words[0] + (f" {words[1]}" if words[0] in ("llmql", "llmql-train") else ""))
    assert ran == [
        "llmql-train hold-out",
        "llmql-train ql",
        "llmql-train contrastive",
        "llmql-export",
        "llmql-sync",
        "llmql tune",
        "llmql-search",
        "llmql-eval",
        "llmql serve",
    ]


def serve_briefly(words: list[str], env: dict, cwd: Path) -> None:
    """Start the service as written (on a free port), see it answer /health and a search, stop it."""
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    words = (
        [*words[: words.index("--port")], "--port", str(port)] if "--port" in words else [*words, "--port", str(port)]
    )
    server = subprocess.Popen(words, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.time() < deadline, server.stderr.read()[-3000:]
            time.sleep(0.3)
        hits = httpx.post(f"http://127.0.0.1:{port}/search", json={"query": "kelp lagoon", "k": 3}, timeout=60)
        assert hits.status_code == 200 and hits.json()["hits"]
    finally:
        server.terminate()
        server.wait(30)
