"""Reading the item results of a bulk request (shared by the OpenSearch and Elasticsearch backends).

Item rejections that will fail again (mapping conflicts, bad values: 4xx) are reported per document and the
rest of the batch lands. Transient ones (429 after the client's retries, 5xx such as a shard whose primary is
being moved off a failed node, a dropped connection) are returned apart, for the caller to send again; a sync
never records as done a batch the engine did not take.
"""

from __future__ import annotations

from collections.abc import Iterable

from llmql.connectors.base import WriteResult


def collect(stream: Iterable[tuple[bool, dict]]) -> tuple[WriteResult, dict[str, str]]:
    """(what landed and what was refused for good, {id: reason} of the items to send again)."""
    result, transient = WriteResult(), {}
    for ok, item in stream:
        info = next(iter(item.values()))
        if ok:
            result.written.append(info["_id"])
            continue
        status = int(info.get("status") or 0)
        error = info.get("error")
        reason = f"{status or 'no status'}: " + (
            error.get("reason", str(error)) if isinstance(error, dict) else str(error)
        )
        if status == 429 or status >= 500 or status == 0:
            transient[info.get("_id", "?")] = reason
        else:
            result.failed.append((info.get("_id", "?"), reason))
    return result, transient
