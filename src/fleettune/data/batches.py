"""Tokenized, dynamically padded mini-batches of a split, tokenized once for all epochs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from fleettune.errors import ModelError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class Batch:
    """Token ids and attention mask [batch, longest sequence in the batch], labels [batch]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    @property
    def num_tokens(self) -> int:
        """Real (unpadded) tokens in the batch."""
        return int(self.attention_mask.sum().item())

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class Batcher:
    """Texts tokenized once (truncated to ``max_length``, unpadded); batches padded per batch, on the right.

    A tokenizer without a pad token gets its eos token as pad (as decoder-only models need); the
    tokenizer object is changed in place so the model sees the same pad id.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        texts: Sequence[str],
        labels: Sequence[int],
        max_length: int,
        pad_to_max_length: bool = False,
    ) -> None:
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ModelError(f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        # Padding every batch to max_length reproduces set-ups that send fixed-size cut tensors.
        self.pad_to = max_length if pad_to_max_length else None
        encoded = tokenizer(
            list(texts), truncation=True, max_length=max_length, padding=False, return_attention_mask=False
        )
        self.input_ids: list[list[int]] = encoded["input_ids"]
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.input_ids)

    def by_length(self) -> np.ndarray:
        """Row indices from shortest to longest text (stable): batches of similar lengths pad little."""
        return np.argsort(
            np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self)), kind="stable"
        )

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    def batches(
        self,
        batch_size: int,
        shuffle: bool,
        rng: np.random.Generator | None,
        drop_last: bool = False,
        order: np.ndarray | None = None,
    ) -> Iterator[Batch]:
        """One epoch of batches; ``shuffle`` draws the order from ``rng`` (required then), else
        ``order`` (a permutation of the rows) or the rows' own order is used."""
        if batch_size < 1:
            raise ValueError(f"batch_size is {batch_size}; expected at least 1")
        if order is not None:
            if shuffle or sorted(order.tolist()) != list(range(len(self))):
                raise ValueError("order must be a permutation of the rows, and not combined with shuffle")
        elif shuffle:
            if rng is None:
                raise ValueError("shuffle=True needs an rng")
            order = rng.permutation(len(self))
        else:
            order = np.arange(len(self))
        stop = self.num_batches(batch_size, drop_last) * batch_size
        for start in range(0, stop, batch_size):
            rows = order[start : start + batch_size]
            padded = self.tokenizer.pad(
                {"input_ids": [self.input_ids[i] for i in rows]},
                padding="max_length" if self.pad_to else "longest",
                max_length=self.pad_to,
                padding_side="right",
                return_attention_mask=True,
                return_tensors="pt",
            )
            yield Batch(padded["input_ids"], padded["attention_mask"], torch.from_numpy(self.labels[rows]))


def iterate_batches(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    labels: Sequence[int],
    batch_size: int,
    max_length: int,
    shuffle: bool,
    rng: np.random.Generator | None,
    drop_last: bool = False,
) -> Iterator[Batch]:
    """One epoch of batches of ``texts``; build a ``Batcher`` instead to tokenize once for many epochs."""
    return Batcher(tokenizer, texts, labels, max_length).batches(batch_size, shuffle, rng, drop_last)
