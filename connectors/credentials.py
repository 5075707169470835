"""Credentials for search engines: from environment variables or a config file, never from the command line.

LLMQL_<ENGINE>_API_KEY, or LLMQL_<ENGINE>_USERNAME and LLMQL_<ENGINE>_PASSWORD   (ENGINE: OPENSEARCH, ...)
or the file named by $LLMQL_CREDENTIALS (default ~/.config/llmql/credentials.json):
    {"opensearch": {"username": "...", "password": "..."}, "elasticsearch": {"api_key": "..."}}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

from llmql.connectors.base import BackendError


def credentials_file() -> Path:
    return Path(os.environ.get("LLMQL_CREDENTIALS", Path.home() / ".config" / "llmql" / "credentials.json"))


def credentials_for(engine: str) -> dict[str, str]:
    """{} (no auth), {"api_key": ...} or {"username": ..., "password": ...}."""
    prefix = f"LLMQL_{engine.upper()}_"
    if os.environ.get(prefix + "API_KEY"):
        return {"api_key": os.environ[prefix + "API_KEY"]}
    if os.environ.get(prefix + "USERNAME"):
        return {"username": os.environ[prefix + "USERNAME"], "password": os.environ.get(prefix + "PASSWORD", "")}
    path = credentials_file()
    if path.is_file():
        try:
            entry = json.loads(path.read_text()).get(engine, {})
        except json.JSONDecodeError as err:
            raise BackendError(f"{path}: not valid JSON ({err.msg})") from None
        return {k: str(v) for k, v in entry.items() if k in ("api_key", "username", "password")}
    return {}


def hosts(url: str) -> list[str]:
    """The nodes a URL names: one, or several separated by commas (the client then uses every node of a cluster
    and carries on when one of them fails); each checked by `check_url`."""
    nodes = [u.strip() for u in url.split(",") if u.strip()]
    if not nodes:
        raise BackendError(f"{url!r}: no URL")
    return [check_url(u) for u in nodes]


def check_url(url: str) -> str:
    """Refuse credentials embedded in a URL (they would end up in shell history and logs)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BackendError(f"{url!r}: expected an http:// or https:// URL")
    if parts.username or parts.password:
        raise BackendError(f"{parts.hostname}: credentials in the URL are not accepted; see `llmql-sync --help`")
    return url
