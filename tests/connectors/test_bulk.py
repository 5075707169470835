"""A bulk response's items: landed, refused for good (reported per document), or refused for now (sent again)."""

from llmql.connectors.bulk import collect


def test_items_are_sorted_into_landed_refused_and_transient():
    stream = [
        (True, {"index": {"_id": "a", "status": 201}}),
        (False, {"index": {"_id": "b", "status": 400, "error": {"reason": "mapper_parsing_exception"}}}),
        (False, {"index": {"_id": "c", "status": 503, "error": {"reason": "primary shard is not active"}}}),
        (False, {"index": {"_id": "d", "status": 429, "error": "rejected"}}),
        (False, {"index": {"_id": "e", "error": "connection dropped"}}),
    ]
    result, transient = collect(stream)
    assert result.written == ["a"]
    assert result.failed == [("b", "400: mapper_parsing_exception")]
    assert transient == {
        "c": "503: primary shard is not active",
        "d": "429: rejected",
        "e": "no status: connection dropped",
    }
