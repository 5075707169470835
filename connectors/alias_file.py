"""The alias file of the engines that keep indexes in a directory (embedded, memory): `aliases.json`, alias ->
index, replaced whole by one rename, so a reader sees the old mapping or the new, never half of one."""

from __future__ import annotations

import json
from pathlib import Path

from llmql.connectors.base import check_directory_name
from llmql.connectors.file_lock import exclusive
from llmql.train.core.config import write_json_atomic

ALIASES = "aliases.json"
LOCK = ".aliases.lock"


def read_aliases(root: Path) -> dict[str, str]:
    path = root / ALIASES
    return json.loads(path.read_text()) if path.is_file() else {}


def point_alias(root: Path, alias: str, index: str) -> list[str]:
    """Point `alias` at `index` (an alias name is held to the index names' rules); the indexes it named before.
    Read, changed and written under a lock: two processes swapping aliases at once each keep the other's."""
    check_directory_name(alias)
    with exclusive(root / LOCK, f"{root}: another process is changing the aliases; waiting for it"):
        aliases = read_aliases(root)
        previous = [aliases[alias]] if alias in aliases else []
        write_json_atomic(root / ALIASES, {**aliases, alias: index})
    return previous
