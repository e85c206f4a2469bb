"""RankMix: one aggregation step for clients of equal or mixed LoRA ranks, checked on a real PEFT model."""

from __future__ import annotations

import copy

import pytest
import torch

from fleettune.aggregation import fedavg, merge_into
from fleettune.aggregation.ranks import RankMix, fresh_adapter
from fleettune.models.adapters import read_adapter, task_model, write_adapter
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import FullModel, full_model
from tests.models.tiny import random_batch, tiny_model

ALPHA = 8.0


def _model(rank: int) -> FullModel:
    model, task = tiny_model("bert")
    return full_model(model, LoraSpec(rank=rank, alpha=ALPHA, dropout=0.0), task)


def _random_state(rank: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * 0.2 for k, v in read_adapter(_model(rank).peft).items()}


def test_equal_ranks_are_plain_fedavg() -> None:
    mix = RankMix({"a": 4, "b": 4}, ALPHA)
    views = [_random_state(4, 1), _random_state(4, 2)]
    out = mix.combine(views, ["a", "b"], [0.25, 0.75])
    expected = fedavg(views, [0.25, 0.75])
    assert out.stacked is None and not mix.merges
    for state in (out.evaluation, out.continue_from["a"], out.continue_from["b"]):
        assert all(torch.equal(state[k], expected[k]) for k in expected)


def test_hetlora_hands_each_client_the_slices_of_its_rank() -> None:
    mix = RankMix({"small": 2, "big": 4}, ALPHA)
    assert mix.global_rank == 4 and not mix.merges
    initial = _random_state(4, 3)
    start = mix.start(initial, "small")
    key = next(k for k in start if k.endswith("lora_A.weight"))
    assert start[key].shape[0] == 2 and torch.equal(start[key], initial[key][:2])
    assert mix.start(initial, "big") == initial
    out = mix.combine([_random_state(2, 4), _random_state(4, 5)], ["small", "big"], [0.5, 0.5])
    assert out.continue_from["small"][key].shape[0] == 2 and out.continue_from["big"][key].shape[0] == 4
    assert out.evaluation[key].shape[0] == 4


def test_flora_folds_exactly_the_weighted_sum_of_the_client_updates() -> None:
    """Base weights + the stacked update, read through a fresh adapter, compute the same logits as
    the base with each module's weight moved by sum_i w_i (alpha / r_i) B_i A_i directly."""
    ranks = {"a": 2, "b": 4}
    mix = RankMix(ranks, ALPHA, "flora", seed=3)
    views = [_random_state(2, 6), _random_state(4, 7)]
    weights = [0.3, 0.7]
    out = mix.combine(views, ["a", "b"], weights, version=1)
    assert out.stacked is not None and out.stacked_rank == 6 and mix.merges

    merged = _model(mix.global_rank)
    base = copy.deepcopy(merged)  # untouched pretrained weights, for the reference
    merge_into(task_model(merged.peft), mix.deltas(out.stacked, out.stacked_rank))
    write_adapter(merged.peft, out.evaluation)

    reference = base
    with torch.no_grad():
        for key in views[0]:
            if not key.endswith("lora_A.weight"):
                continue
            prefix = key.removesuffix(".lora_A.weight")
            update = sum(
                w * (ALPHA / ranks[c]) * (view[prefix + ".lora_B.weight"].double() @ view[key].double())
                for c, w, view in zip(("a", "b"), weights, views, strict=True)
            )
            target = task_model(reference.peft).get_submodule(prefix).base_layer
            target.weight.add_(update.float())
        heads = fedavg([{k: v for k, v in view.items() if "lora_" not in k} for view in views], weights)
        zero_adapter = {k: torch.zeros_like(v) if "lora_B" in k else v for k, v in out.evaluation.items()}
        write_adapter(reference.peft, {**zero_adapter, **heads})
    ids, mask, _ = random_batch(merged.task)
    assert torch.allclose(merged.logits(ids, mask), reference.logits(ids, mask), atol=1e-5)


def test_flora_fresh_adapters_change_nothing_and_are_seeded() -> None:
    mix = RankMix({"a": 2, "b": 4}, ALPHA, "flora", seed=5)
    views = [_random_state(2, 8), _random_state(4, 9)]
    first = mix.combine(views, ["a", "b"], [0.5, 0.5], version=1)
    again = mix.combine(views, ["a", "b"], [0.5, 0.5], version=1)
    later = mix.combine(views, ["a", "b"], [0.5, 0.5], version=2)
    fresh = first.continue_from["a"]
    for key, value in fresh.items():
        if key.endswith("lora_B.weight"):
            assert value.shape[1] == 2 and not value.any()
        elif key.endswith("lora_A.weight"):
            assert value.shape[0] == 2 and value.abs().max() <= value.shape[1] ** -0.5
            assert torch.equal(value, again.continue_from["a"][key])
            assert not torch.equal(value, later.continue_from["a"][key])
            assert not torch.equal(value[:2], first.continue_from["b"][key][:2])


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown way"):
        RankMix({"a": 2}, ALPHA, "average")
    with pytest.raises(ValueError, match="rank >= 1"):
        RankMix({"a": 0}, ALPHA)


def test_a_fresh_adapter_of_some_modules_is_those_modules_of_the_whole_one() -> None:
    """A device draws its fresh adapter over its own layers only; each module's draw depends on the run's seed,
    the version, the client and the module, never on which other modules are drawn with it."""
    mix = RankMix({"a": 2, "b": 4}, ALPHA, "flora", seed=5)
    stacked = mix.combine([_random_state(2, 8), _random_state(4, 9)], ["a", "b"], [0.5, 0.5], version=3).stacked
    assert stacked is not None
    whole = mix.fresh(stacked, 2, "b", version=3)
    keys = [k for k in stacked if k.endswith(("lora_A.weight", "lora_B.weight"))]
    some = {k: stacked[k] for k in reversed(keys[len(keys) // 2 :])}  # a later half, in another order
    part = fresh_adapter(some, 2, seed=5, version=3, index=1)
    assert part.keys() == some.keys()
    assert all(torch.equal(part[k], whole[k]) for k in part)
    assert not torch.equal(fresh_adapter(some, 2, seed=5, version=3, index=0)[keys[-2]], part[keys[-2]])


def test_fresh_adapter_golden_draw() -> None:
    """The seeding is pinned: the same numbers in every process and every release."""
    template = {"m.lora_A.weight": torch.zeros(1, 4), "m.lora_B.weight": torch.zeros(3, 1), "head": torch.ones(2)}
    out = fresh_adapter(template, 2, seed=0, version=1, index=0)
    assert out["m.lora_A.weight"].shape == (2, 4) and not out["m.lora_B.weight"].any()
    assert out["m.lora_B.weight"].shape == (3, 2) and torch.equal(out["head"], torch.ones(2))
    expected = [0.0943288, 0.0994644, 0.1050760, 0.3093919, -0.2120375, -0.4434122, 0.2493632, -0.0930545]
    assert out["m.lora_A.weight"].flatten().tolist() == pytest.approx(expected, abs=1e-7)
