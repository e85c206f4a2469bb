"""Endless shuffled mini-batch streams over a split, tokenized once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase

from fleettune.data import Batch, Batcher, Split


@dataclass
class BatchSource:
    tokenizer: PreTrainedTokenizerBase
    max_length: int
    batch_size: int
    pad_to_max_length: bool = False  # training batches only; evaluation always pads to the longest

    def batcher(self, split: Split, training: bool = True) -> Batcher:
        pad = self.pad_to_max_length and training
        return Batcher(self.tokenizer, split.texts, split.labels, self.max_length, pad_to_max_length=pad)

    def stream(self, split: Split, rng: np.random.Generator) -> Iterator[Batch]:
        """Batches forever: each pass is a fresh permutation; a short final batch is kept."""
        batcher = self.batcher(split)
        while True:
            yield from batcher.batches(self.batch_size, shuffle=True, rng=rng)

    def steps_per_epoch(self, split: Split) -> int:
        return -(-len(split) // self.batch_size)
