"""Malicious clients are chosen from the seed (ceil of fraction x clients); label flipping maps l to L-1-l."""

from __future__ import annotations

import numpy as np

from fleettune.data import Split
from fleettune.security.attacks import choose_malicious, flip_labels

IDS = [f"c{i}" for i in range(10)]


def test_malicious_count_is_rounded_up_and_fixed_by_the_seed() -> None:
    assert len(choose_malicious(IDS, 0.25, np.random.default_rng(0))) == 3
    assert len(choose_malicious(IDS, 0.3, np.random.default_rng(0))) == 3  # 0.3 x 10 is 3, not 4
    assert len(choose_malicious(IDS, 0.01, np.random.default_rng(0))) == 1
    assert choose_malicious(IDS, 0.0, np.random.default_rng(0)) == ()
    first = choose_malicious(IDS, 0.4, np.random.default_rng([7, 5]))
    assert first == choose_malicious(IDS, 0.4, np.random.default_rng([7, 5]))
    assert list(first) == [c for c in IDS if c in first]  # in the clients' order


def test_flip_labels_reverses_the_label_ids() -> None:
    split = Split(["a", "b", "c", "d"], [0, 1, 2, 3], ["g", "g", "h", "h"])
    flipped = flip_labels(split, 4)
    assert flipped.labels == [3, 2, 1, 0] and flipped.texts == split.texts and flipped.groups == split.groups
    assert split.labels == [0, 1, 2, 3]
