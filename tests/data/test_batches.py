"""Batches: tokenized once, truncated at max_length, padded on the right to the batch's longest row."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from fleettune.data import Batch, Batcher, iterate_batches

TEXTS = ["short", "a somewhat longer sentence about pumps", "mid length text", "x " * 200]
LABELS = [3, 1, 0, 2]


def test_padding_is_to_the_longest_row_of_each_batch_not_max_length(minilm_tokenizer: Any) -> None:
    batches = list(iterate_batches(minilm_tokenizer, TEXTS[:3], LABELS[:3], 2, 128, shuffle=False, rng=None))
    lengths = [len(minilm_tokenizer(text)["input_ids"]) for text in TEXTS[:3]]
    assert [b.input_ids.shape[1] for b in batches] == [max(lengths[:2]), lengths[2]]
    first = batches[0]
    assert first.attention_mask[0].tolist() == [1] * lengths[0] + [0] * (lengths[1] - lengths[0])
    assert (first.input_ids[0, lengths[0] :] == minilm_tokenizer.pad_token_id).all()


def test_long_rows_are_truncated_at_max_length(minilm_tokenizer: Any) -> None:
    (batch,) = iterate_batches(minilm_tokenizer, TEXTS, LABELS, 4, 16, shuffle=False, rng=None)
    assert batch.input_ids.shape == (4, 16)
    assert batch.attention_mask[3].sum() == 16
    assert batch.num_tokens == int(batch.attention_mask.sum())


def test_labels_follow_their_rows_through_a_shuffle(minilm_tokenizer: Any) -> None:
    texts = [f"row number {i}" for i in range(10)]
    batches = list(iterate_batches(minilm_tokenizer, texts, list(range(10)), 3, 32, True, np.random.default_rng(0)))
    assert sorted(torch.cat([b.labels for b in batches]).tolist()) == list(range(10))
    for batch in batches:
        assert batch.labels.dtype == torch.long
        for ids, label in zip(batch.input_ids, batch.labels, strict=True):
            assert minilm_tokenizer.decode(ids, skip_special_tokens=True) == f"row number {int(label)}"


def test_shuffle_order_is_fixed_by_the_rng(minilm_tokenizer: Any) -> None:
    batcher = Batcher(minilm_tokenizer, [f"t{i}" for i in range(12)], list(range(12)), 32)

    def order(seed: int) -> list[int]:
        return torch.cat([b.labels for b in batcher.batches(5, True, np.random.default_rng(seed))]).tolist()

    assert order(1) == order(1)
    assert order(1) != order(2)


def test_drop_last_drops_the_short_batch(minilm_tokenizer: Any) -> None:
    batcher = Batcher(minilm_tokenizer, [f"t{i}" for i in range(7)], [0] * 7, 32)
    assert [len(b) for b in batcher.batches(3, False, None)] == [3, 3, 1]
    assert [len(b) for b in batcher.batches(3, False, None, drop_last=True)] == [3, 3]
    assert batcher.num_batches(3) == 3 and batcher.num_batches(3, drop_last=True) == 2


def test_texts_are_tokenized_once_for_all_epochs(minilm_tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    batcher = Batcher(minilm_tokenizer, TEXTS, LABELS, 32)

    def no_retokenizing(*args: object, **kwargs: object) -> None:
        raise AssertionError("texts were tokenized again")

    monkeypatch.setattr(type(minilm_tokenizer), "__call__", no_retokenizing)
    for _ in range(2):
        assert sum(len(batch) for batch in batcher.batches(2, False, None)) == 4


def test_a_tokenizer_without_pad_token_pads_with_eos(minilm_tokenizer: Any) -> None:
    tokenizer = copy.deepcopy(minilm_tokenizer)
    tokenizer.pad_token = None
    tokenizer.eos_token = "[SEP]"
    (batch,) = Batcher(tokenizer, ["a", "a b c d"], [0, 1], 16).batches(2, False, None)
    assert tokenizer.pad_token == "[SEP]"
    assert batch.input_ids[0, -1].item() == tokenizer.convert_tokens_to_ids("[SEP]")


def test_shuffle_without_rng_is_refused(minilm_tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="needs an rng"):
        next(iterate_batches(minilm_tokenizer, TEXTS, LABELS, 2, 16, shuffle=True, rng=None))


def test_num_tokens_counts_unpadded_tokens() -> None:
    batch = Batch(torch.zeros(2, 3, dtype=torch.long), torch.tensor([[1, 1, 0], [1, 1, 1]]), torch.tensor([0, 1]))
    assert batch.num_tokens == 5


def test_pad_to_max_length_gives_fixed_size_batches(minilm_tokenizer) -> None:
    from fleettune.data import Batcher

    batcher = Batcher(
        minilm_tokenizer, ["short", "a somewhat longer sentence here"], [0, 1], 16, pad_to_max_length=True
    )
    batch = next(batcher.batches(2, shuffle=False, rng=None))
    assert batch.input_ids.shape == (2, 16)
    assert batch.attention_mask.sum(dim=1).tolist()[0] < 16


def test_length_order_batches_similar_lengths_and_keeps_labels_with_rows(minilm_tokenizer: Any) -> None:
    texts = ["a b c d e f g h", "a", "a b c d", "a b", "a b c d e f", "a b c"]
    batcher = Batcher(minilm_tokenizer, texts, [0, 1, 2, 3, 4, 5], max_length=32)
    order = batcher.by_length()
    assert order.tolist() == [1, 3, 5, 2, 4, 0]
    batches = list(batcher.batches(2, shuffle=False, rng=None, order=order))
    assert [b.labels.tolist() for b in batches] == [[1, 3], [5, 2], [4, 0]]
    assert [b.input_ids.shape[1] for b in batches] == [4, 6, 10]  # [CLS] + words + [SEP], padded per batch
    with pytest.raises(ValueError, match="permutation"):
        next(batcher.batches(2, shuffle=False, rng=None, order=order[:3]))
