from llmql.train.collate import collate_contrastive, collate_ql, contrastive_tokens, ql_tokens


def test_ql_targets_are_exactly_the_query_tokens_and_eos():
    items = [{"passage": [5, 6, 7, 2], "query": [8, 9, 2]}, {"passage": [5, 2], "query": [8, 2]}]
    batch = collate_ql(items, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 2, 8, 9, 2], [5, 2, 8, 2, 0, 0, 0]]
    assert batch["end_positions"].tolist() == [3, 1]
    assert batch["target_mask"].tolist() == [[0, 0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0, 0]]


def test_ql_loss_on_all_covers_every_real_token_after_the_first():
    batch = collate_ql([{"passage": [5, 6, 2], "query": [8, 2]}, {"passage": [5, 2], "query": [2]}], 0, "all")
    assert batch["target_mask"].tolist() == [[0, 1, 1, 1, 1], [0, 1, 1, 0, 0]]


def test_contrastive_groups_stay_contiguous():
    items = [{"query": [1], "passages": [[2], [3, 3]]}, {"query": [4, 4], "passages": [[5], [6]]}]
    batch = collate_contrastive(items, pad_id=0)
    assert batch["passage_ids"].tolist() == [[2, 0], [3, 3], [5, 0], [6, 0]]
    assert batch["query_mask"].tolist() == [[1, 0], [1, 1]]


def test_token_counts_leave_out_padding_packed_or_not():
    ql_items = [{"passage": [5, 6, 7, 2], "query": [8, 9, 2]}, {"passage": [5, 2], "query": [8, 2]}]
    assert ql_tokens(collate_ql(ql_items, pad_id=0)) == 11  # 14 positions, 3 of them padding
    assert ql_tokens(collate_ql(ql_items, pad_id=0, pack_tokens=16)) == 11
    cl_items = [{"query": [1], "passages": [[2], [3, 3]]}, {"query": [4, 4], "passages": [[5], [6]]}]
    assert contrastive_tokens(collate_contrastive(cl_items, pad_id=0)) == 3 + 5
    assert contrastive_tokens(collate_contrastive(cl_items, pad_id=0, pack_tokens=4)) == 3 + 5
