"""Backdoor poisoning is seeded and touches round(fraction x n) texts; success is measured on triggered test texts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fleettune.config import build_config
from fleettune.data import Batch, Split
from fleettune.errors import ConfigError
from fleettune.report import build_report
from fleettune.runner import execute, prepare
from fleettune.security.attacks import DataAttack
from fleettune.security.backdoor import (
    attack_success,
    flip_rate,
    insert_trigger,
    poison,
    poisoned_count,
    target_rate,
    triggered,
)
from tests.schemes.conftest import tiny_flags

TRIGGER = "cf mn bq"


def _split(n: int) -> Split:
    return Split([f"text number {i}" for i in range(n)], [i % 3 for i in range(n)], [f"g{i % 2}" for i in range(n)])


def test_the_trigger_goes_in_front() -> None:
    assert insert_trigger("the fridge is idle", TRIGGER) == "cf mn bq the fridge is idle"


@pytest.mark.parametrize(("fraction", "n", "count"), [(0.5, 10, 5), (0.5, 5, 3), (0.3, 7, 2), (1.0, 4, 4), (0.1, 3, 0)])
def test_poisoned_count_rounds_half_up(fraction: float, n: int, count: int) -> None:
    assert poisoned_count(fraction, n) == count


def test_poison_is_seeded_and_touches_exactly_the_rounded_count() -> None:
    split = _split(11)
    first = poison(split, TRIGGER, 0.4, 2, np.random.default_rng([3, 6]))
    again = poison(split, TRIGGER, 0.4, 2, np.random.default_rng([3, 6]))
    other = poison(split, TRIGGER, 0.4, 2, np.random.default_rng([4, 6]))
    assert first == again and first != other
    touched = [i for i in range(11) if first.texts[i] != split.texts[i]]
    assert len(touched) == 4  # round(0.4 x 11) = round(4.4)
    assert all(first.texts[i] == f"{TRIGGER} {split.texts[i]}" and first.labels[i] == 2 for i in touched)
    assert all(first.labels[i] == split.labels[i] for i in range(11) if i not in touched)
    assert first.groups == split.groups and split.texts[0] == "text number 0"  # the input is left alone


def test_data_attack_poisons_malicious_clients_only_each_from_its_own_stream() -> None:
    attack = DataAttack("backdoor", frozenset({"a", "b"}), 3, TRIGGER, 0.5, 1, (0, 6))
    split = _split(8)
    assert attack.apply("honest", split) is split
    a, b = attack.apply("a", split), attack.apply("b", split)
    assert sum(t.startswith(TRIGGER) for t in a.texts) == sum(t.startswith(TRIGGER) for t in b.texts) == 4
    assert a == attack.apply("a", split) and a != b
    assert DataAttack("label_flip", frozenset({"a"}), 3).apply("a", split).labels == [2 - y for y in split.labels]
    with pytest.raises(ValueError, match="target label 3"):
        DataAttack("backdoor", frozenset({"a"}), 3, target=3)
    with pytest.raises(ValueError, match="unknown data attack"):
        DataAttack("scale", frozenset({"a"}), 3)


def test_attack_success_rate_on_a_hand_built_case() -> None:
    # Four test texts are not of the target class 0; the fake model below says 0 for triggered texts whose
    # last word has 3 letters or more (3 of the 4), and for clean texts only when it has 5 (1 of the 4).
    test = Split(["a", "bb", "ccc", "dddd", "eeeee", "ffffff"], [0, 1, 2, 1, 2, 0])
    clean, poisoned = triggered(test, TRIGGER, 0)
    assert clean.texts == ["bb", "ccc", "dddd", "eeeee"] and poisoned.texts[0] == f"{TRIGGER} bb"

    def batches(split: Split) -> list[Batch]:
        ids = torch.tensor([[int(t.startswith(TRIGGER)), len(t.split()[-1])] for t in split.texts])
        return [Batch(ids, torch.ones_like(ids), torch.tensor(split.labels))]

    def logits(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        says_target = torch.where(input_ids[:, 0] == 1, input_ids[:, 1] >= 3, input_ids[:, 1] == 5)
        return torch.stack([says_target.float(), 1 - says_target.float(), torch.zeros(len(input_ids))], dim=1)

    result = attack_success(logits, test, TRIGGER, 0, 0.5, batches)
    assert (result.success_rate, result.clean_target_rate, result.test_samples) == (0.75, 0.25, 4)
    # Without the trigger "eeeee" already goes to the target; of the other three the trigger flips ccc and dddd.
    assert (result.flip_rate, result.flip_samples) == (pytest.approx(2 / 3), 3)
    assert flip_rate(np.array([0, 0]), np.array([0, 0]), 0) == (0.0, 0)
    assert target_rate(np.array([1, 1, 0]), 1) == pytest.approx(2 / 3) and target_rate(np.array([]), 0) == 0.0


def test_a_backdoor_run_reports_its_success_rate(tiny_model_dir: Path, tiny_data_dir: Path) -> None:
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, "fl", rounds=2, local_steps=3, lr=1e-2, clients=4)
    flags.update({"security.attack": "backdoor", "security.malicious_fraction": 0.5, "security.backdoor_target": 2})
    prepared = prepare(build_config(flags=flags))
    malicious = set(prepared.setup.safeguards.malicious)
    assert len(malicious) == 2
    for client in prepared.setup.clients:
        triggered_rows = [i for i, t in enumerate(client.train.texts) if t.startswith(TRIGGER)]
        expected = poisoned_count(0.5, len(client.train)) if client.id in malicious else 0
        assert len(triggered_rows) == expected and all(client.train.labels[i] == 2 for i in triggered_rows)
    report = build_report(prepared, execute(prepared), 0.0)
    backdoor = report["security"]["backdoor"]
    assert backdoor["trigger"] == TRIGGER and backdoor["target"] == 2 and backdoor["test_samples"] == 20
    assert 0.0 <= backdoor["success_rate"] <= 1.0 and 0.0 <= backdoor["clean_target_rate"] <= 1.0
    assert 0.0 <= backdoor["flip_rate"] <= 1.0 and backdoor["flip_samples"] <= 20
    assert report["privacy"]["membership"] is None and report["privacy"]["inversion"] is None


def test_a_target_label_the_data_lacks_is_a_config_error(tiny_model_dir: Path, tiny_data_dir: Path) -> None:
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, "fl", rounds=1)
    flags.update({"security.attack": "backdoor", "security.malicious_fraction": 0.5, "security.backdoor_target": 3})
    with pytest.raises(ConfigError, match=r"^security\.backdoor_target: label 3 does not exist; expected 0\.\.2$"):
        prepare(build_config(flags=flags))
