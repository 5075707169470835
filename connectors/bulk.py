"""Reading the item results of a bulk request (shared by the OpenSearch and Elasticsearch backends).

Item rejections that will fail again (mapping conflicts, bad values: 4xx) are reported per document and the
rest of the batch lands. Anything transient (429 after the client's retries, 5xx, a dropped connection) aborts
the batch with an error, so a sync never records as done a batch the engine did not take.
"""

from __future__ import annotations

from collections.abc import Iterable

from llmql.connectors.base import BackendError, WriteResult


def collect(stream: Iterable[tuple[bool, dict]], where: str) -> WriteResult:
    result = WriteResult()
    for ok, item in stream:
        info = next(iter(item.values()))
        if ok:
            result.written.append(info["_id"])
            continue
        status = int(info.get("status") or 0)
        error = info.get("error")
        reason = error.get("reason", str(error)) if isinstance(error, dict) else str(error)
        if status == 429 or status >= 500 or status == 0:
            raise BackendError(
                f"{where}: bulk write not accepted ({status or 'no status'}: {reason}); "
                "the batch will be retried by --resume"
            )
        result.failed.append((info.get("_id", "?"), f"{status}: {reason}"))
    return result
