"""Which documents one sync process writes, and how the processes of one sharded sync agree.

A shard is a stable share of the corpus by document id (a hash, not a line number, so that it does not move when
lines are added or reordered). Under torchrun or `accelerate launch` each rank takes shard RANK/WORLD_SIZE and
its own LOCAL_RANK device; the ranks form a process group (gloo, so CPUs work too) through which rank 0 chooses
the index generation, creates the index before anyone writes, and runs the steps that act on the whole index
(deletions, refresh, the alias swap) once, after every shard has confirmed its last batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from llmql.train.core.errors import LLMQLError


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def owns(self, doc_id: str) -> bool:
        return self.count == 1 or shard_of(doc_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE = Shard()  # the whole corpus: an unsharded sync


def shard_of(doc_id: str, count: int) -> int:
    """The shard (0..count-1) a document id belongs to; the same on every machine and Python process."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def parse_shard(text: str) -> Shard:
    """'I/N' (0 <= I < N) -> Shard, or ValueError saying what is wrong."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"shard {text!r}: write I/N, e.g. 0/4 for the first of four shards")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise ValueError(f"shard {text!r}: I must be 0 to N-1 and N at least 1")
    return Shard(index, count)


def launcher_shard() -> Shard | None:
    """This process's shard under torchrun / accelerate launch (RANK of WORLD_SIZE), None when launched alone."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return Shard(int(os.environ.get("RANK", "0") or 0), world) if world > 1 else None


class ShardGroup:
    """The processes of one sync. Launched alone (or with a manual --shard) it is a group of one and every
    method is trivial; under a launcher it wraps the torch.distributed group that accelerate sets up."""

    def __init__(self, shard: Shard, launched: bool):
        self.shard, self.launched = shard, launched
        if launched:
            from llmql.train.distributed import process_state

            self._state = process_state()  # gloo on a CPU host, nccl on GPUs; env:// from the launcher

    @property
    def leader(self) -> bool:
        return self.shard.index == 0 if self.launched else True

    def share(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank."""
        if not self.launched:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.launched:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.shard.count
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.launched:
            self._state.wait_for_everyone()

    @contextlib.contextmanager
    def leader_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (creating what the others then open), then every other rank."""
        if not self.leader:
            self.barrier()
        yield
        if self.leader:
            self.barrier()


def shard_group(spec: str | None) -> ShardGroup:
    """The group for `--shard` (None: the launcher's rank, or the whole corpus when launched alone)."""
    launched = launcher_shard()
    if spec is None:
        return ShardGroup(launched or Shard(), launched is not None)
    shard = parse_shard(spec)
    if launched is not None and shard != launched:
        raise LLMQLError(
            f"--shard {spec} disagrees with the launcher (rank {launched.index} of {launched.count}); "
            "under torchrun or accelerate launch leave --shard out, each rank takes its own"
        )
    return ShardGroup(shard, launched is not None)
