"""Heterogeneous-rank LoRA aggregation: HetLoRA padding and FLoRA stacking, by hand and on a PEFT model."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import PreTrainedModel

from fleettune.aggregation import (
    fedavg,
    flora_stack,
    hetlora_aggregate,
    hetlora_truncate,
    lora_deltas,
    merge_into,
    sample_weights,
)
from fleettune.models.adapters import read_adapter, write_adapter
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import FullModel, Task, full_model
from tests.models.tiny import random_batch, tiny_model

A, B = ".lora_A.weight", ".lora_B.weight"
MODULES = {"m.q": (3, 5), "m.v": (4, 3)}  # module -> (in, out)


def _random_state(rank: int, seed: int, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, (fan_in, fan_out) in MODULES.items():
        state[name + A] = torch.randn(rank, fan_in, generator=g, dtype=dtype)
        state[name + B] = torch.randn(fan_out, rank, generator=g, dtype=dtype)
    state["head.weight"] = torch.randn(2, 3, generator=g, dtype=dtype)
    return state


def _weighted_deltas(
    states: list[dict[str, torch.Tensor]], ranks: list[int], weights: list[float], alphas: list[float]
) -> dict[str, torch.Tensor]:
    total: dict[str, torch.Tensor] = {}
    for state, rank, weight, alpha in zip(states, ranks, weights, alphas, strict=True):
        for name, delta in lora_deltas(state, alpha, rank, dtype=torch.float64).items():
            total[name] = total[name] + weight * delta if name in total else weight * delta
    return total


# Two clients, ranks 1 and 2, 2x2 weights, alpha 2 (scalings 2 and 1), sample counts 1 and 3.
GOLDEN = [
    {"m" + A: torch.tensor([[1.0, 2.0]]), "m" + B: torch.tensor([[1.0], [2.0]]), "h": torch.tensor([4.0])},
    {
        "m" + A: torch.tensor([[3.0, 4.0], [5.0, 6.0]]),
        "m" + B: torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
        "h": torch.tensor([8.0]),
    },
]


def test_hetlora_golden_padding_weighting_and_truncation() -> None:
    state, rank = hetlora_aggregate(GOLDEN, [1, 2], [1, 3], alpha=2.0)
    assert rank == 2
    # Slice 0: both clients, weights 1/4 and 3/4; client 0's B doubled ((2/1) / (2/2)). Slice 1: client 1 alone.
    assert torch.equal(state["m" + A], torch.tensor([[2.5, 3.5], [5.0, 6.0]]))
    assert torch.equal(state["m" + B], torch.tensor([[1.25, 2.0], [3.25, 4.0]]))
    assert torch.equal(state["h"], torch.tensor([7.0]))
    assert list(state) == list(GOLDEN[0])

    small = hetlora_truncate(state, rank=1, alpha=2.0, global_rank=2)
    assert torch.equal(small["m" + A], torch.tensor([[2.5, 3.5]]))
    assert torch.equal(small["m" + B], torch.tensor([[0.625], [1.625]]))  # halved back to scaling 2
    assert torch.equal(small["h"], torch.tensor([7.0]))
    assert torch.equal(GOLDEN[0]["m" + B], torch.tensor([[1.0], [2.0]]))  # inputs untouched


def test_flora_golden_stacking() -> None:
    state, rank = flora_stack(GOLDEN, [1, 2], [1, 3], alpha=2.0)
    assert rank == 3
    # Global scaling 2/3; A_i scaled by w_i * s_i / (2/3): 0.25 * 2 * 1.5 = 0.75 and 0.75 * 1 * 1.5 = 1.125.
    assert torch.equal(state["m" + A], torch.tensor([[0.75, 1.5], [3.375, 4.5], [5.625, 6.75]]))
    assert torch.equal(state["m" + B], torch.tensor([[1.0, 1.0, 2.0], [2.0, 3.0, 4.0]]))
    assert torch.equal(state["h"], torch.tensor([7.0]))
    expected = _weighted_deltas(GOLDEN, [1, 2], [0.25, 0.75], [2.0, 2.0])["m"]
    torch.testing.assert_close(lora_deltas(state, 2.0, 3, dtype=torch.float64)["m"], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("alphas", [[16.0, 16.0, 16.0], [4.0, 16.0, 32.0]])
def test_flora_stack_applies_exactly_the_weighted_sum_of_updates(alphas: list[float]) -> None:
    ranks = [2, 4, 8]
    states = [_random_state(r, seed=r) for r in ranks]
    raw = torch.rand(3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.1
    weights = (raw / raw.sum()).tolist()
    stacked, rank = flora_stack(states, ranks, weights, alphas, global_alpha=8.0)
    assert rank == 14
    assert stacked["m.q" + A].shape == (14, 3) and stacked["m.q" + B].shape == (5, 14)
    got = lora_deltas(stacked, 8.0, rank)
    want = _weighted_deltas(states, ranks, weights, alphas)
    assert set(got) == set(want) == set(MODULES)
    for name in MODULES:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=0, msg=name)
    torch.testing.assert_close(
        stacked["head.weight"], sum(w * s["head.weight"] for w, s in zip(weights, states, strict=True))
    )


@given(
    ranks=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_flora_exactness_property(ranks: list[int], data: st.DataObject, seed: int) -> None:
    count = len(ranks)
    weights = data.draw(st.lists(st.floats(0.0, 10.0), min_size=count, max_size=count).filter(lambda w: sum(w) > 0.1))
    alphas = data.draw(st.lists(st.floats(0.5, 64.0), min_size=count, max_size=count))
    states = [_random_state(r, seed=seed + i) for i, r in enumerate(ranks)]
    stacked, rank = flora_stack(states, ranks, weights, alphas, global_alpha=alphas[0])
    assert rank == sum(ranks)
    norm = [w / sum(weights) for w in weights]
    want = _weighted_deltas(states, ranks, norm, alphas)
    got = lora_deltas(stacked, alphas[0], rank)
    for name in MODULES:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=1e-9, msg=name)


def test_hetlora_with_equal_ranks_is_fedavg_of_the_factors() -> None:
    states = [_random_state(4, seed=s, dtype=torch.float32) for s in range(3)]
    weights = sample_weights([10, 30, 60])
    state, rank = hetlora_aggregate(states, [4, 4, 4], weights, alpha=8.0)
    assert rank == 4
    plain = fedavg(states, weights)
    assert set(state) == set(plain)
    for key in plain:
        torch.testing.assert_close(state[key], plain[key], msg=key)


def test_hetlora_truncation_gives_each_rank_its_shapes() -> None:
    ranks = [2, 3, 5]
    state, rank = hetlora_aggregate([_random_state(r, seed=r) for r in ranks], ranks, [1, 1, 1], alpha=8.0)
    assert rank == 5
    for r in ranks:
        small = hetlora_truncate(state, r, 8.0, rank)
        for name, (fan_in, fan_out) in MODULES.items():
            assert small[name + A].shape == (r, fan_in)
            assert small[name + B].shape == (fan_out, r)
        torch.testing.assert_close(small["head.weight"], state["head.weight"])


@pytest.mark.parametrize("others", [[], [6], [7, 2]])
def test_padding_then_truncating_a_lone_client_returns_it(others: list[int]) -> None:
    own = _random_state(3, seed=0, dtype=torch.float32)
    states = [own] + [_random_state(r, seed=r, dtype=torch.float32) for r in others]
    ranks = [3, *others]
    weights = [1.0] + [0.0] * len(others)  # the others pad the global rank but carry no weight
    state, rank = hetlora_aggregate(states, ranks, weights, alpha=16.0)
    assert rank == max(ranks)
    # At the global rank the padded adapter applies the client's own update...
    for name, delta in lora_deltas(own, 16.0, 3, dtype=torch.float64).items():
        got = lora_deltas(state, 16.0, rank, dtype=torch.float64)[name]
        torch.testing.assert_close(got, delta, atol=1e-5, rtol=1e-6, msg=name)
    # ...and truncating gives it back: bit for bit when B's rescaling R / r is a power of two (or 1), else
    # up to the rounding of the rescaled B stored in float32.
    back = hetlora_truncate(state, 3, 16.0, rank)
    assert list(back) == list(own)
    for key in own:
        if rank in (3, 6):
            assert torch.equal(back[key], own[key]), key
        else:
            torch.testing.assert_close(back[key], own[key], atol=0, rtol=2e-7, msg=key)


def test_per_client_alphas_need_a_global_alpha() -> None:
    states = [_random_state(2, seed=0), _random_state(4, seed=1)]
    with pytest.raises(ValueError, match="pass global_alpha"):
        hetlora_aggregate(states, [2, 4], [1, 1], alpha=[8.0, 16.0])
    state, rank = hetlora_aggregate(states, [2, 4], [1, 0], alpha=[8.0, 16.0], global_alpha=4.0)
    for name, delta in lora_deltas(states[0], 8.0, 2).items():  # client 0 alone: its update is kept
        torch.testing.assert_close(lora_deltas(state, 4.0, rank)[name], delta)


def test_merge_into_adds_deltas_to_a_weight_mapping_without_touching_it() -> None:
    weights = {"m.weight": torch.ones(2, 2), "m.bias": torch.zeros(2)}
    merged = merge_into(weights, {"m": torch.tensor([[1.0, 2.0], [3.0, 4.0]])})
    assert torch.equal(merged["m.weight"], torch.tensor([[2.0, 3.0], [4.0, 5.0]]))
    assert torch.equal(weights["m.weight"], torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"no weight x\.weight"):
        merge_into(weights, {"x": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="shape"):
        merge_into(weights, {"m": torch.zeros(3, 2)})


def _peft_client(base: PreTrainedModel, task: Task, rank: int, seed: int) -> tuple[FullModel, dict[str, torch.Tensor]]:
    full = full_model(copy.deepcopy(base), LoraSpec(rank=rank, alpha=8.0, dropout=0.0), task)
    full.peft.eval()
    g = torch.Generator().manual_seed(seed)
    # PEFT starts lora_B at zero: give every factor and the head values a trained client might hold.
    state = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in read_adapter(full.peft).items()}
    return full, state


def test_both_methods_on_a_peft_model_and_the_stack_matches_merged_deltas() -> None:
    base, task = tiny_model("bert")
    ranks = [2, 4, 8]
    clients = [_peft_client(base, task, r, seed=r) for r in ranks]
    states = [state for _, state in clients]
    weights = sample_weights([50, 30, 20])

    het, het_rank = hetlora_aggregate(states, ranks, weights, alpha=8.0)
    assert het_rank == 8
    assert {k: v.shape for k, v in het.items()} == {k: v.shape for k, v in states[2].items()}
    write_adapter(clients[2][0].peft, het)  # a rank-8 model takes the global state
    for (model, _), r in zip(clients, ranks, strict=True):
        write_adapter(model.peft, hetlora_truncate(het, r, 8.0, het_rank))

    stacked, rank = flora_stack(states, ranks, weights, alpha=8.0)
    assert rank == 14
    for key, value in stacked.items():
        if key.endswith(A):
            assert value.shape == (14, states[0][key].shape[1]), key
        elif key.endswith(B):
            assert value.shape == (states[0][key].shape[0], 14), key
        else:
            assert value.shape == states[0][key].shape, key
    wide, _ = _peft_client(base, task, 14, seed=0)
    write_adapter(wide.peft, stacked)

    # Reference: the base model with the weighted sum of the client updates merged in, heads averaged.
    merged = copy.deepcopy(base).eval()
    deltas = _weighted_deltas(states, ranks, weights, [8.0] * 3)
    merge_into(merged, {name: delta.float() for name, delta in deltas.items()})
    heads = {k: v for k, v in stacked.items() if "lora_" not in k}
    assert heads and not set(heads) - set(merged.state_dict())
    merged.load_state_dict(heads, strict=False)

    ids, mask, _ = random_batch(task)
    with torch.no_grad():
        want = merged(input_ids=ids, attention_mask=mask).logits
        got = wide.logits(ids, mask)
        plain = copy.deepcopy(base).eval()(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(want, plain, atol=1e-3)  # the updates matter
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def _pair() -> list[dict[str, torch.Tensor]]:
    return [_random_state(2, seed=0), _random_state(3, seed=1)]


@pytest.mark.parametrize(
    ("states", "ranks", "weights", "message"),
    [
        ([], [], [], "no client states"),
        (_pair(), [2, 3], [1.0], "one weight per client state, got 2 states and 1 weights"),
        (_pair(), [2], [1.0, 1.0], "one rank per client state"),
        (_pair(), [2, 4], [1.0, 1.0], r"client 1: m\.q\.lora_A\.weight has rank 3 but the rank given is 4"),
        (_pair(), [2, 0], [1.0, 1.0], "client 1: rank must be a positive integer"),
        (_pair(), [2, 3], [1.0, -1.0], "client 1: weight must be non-negative"),
        (_pair(), [2, 3], [0.0, 0.0], "positive sum"),
        (
            [_random_state(2, seed=0), {**_random_state(3, seed=1), "extra": torch.zeros(1)}],
            [2, 3],
            [1.0, 1.0],
            r"client 1 keys differ from client 0: missing \[\], unexpected \['extra'\]",
        ),
        (
            [_random_state(2, seed=0), {**_random_state(3, seed=1), "head.weight": torch.zeros(3, 3)}],
            [2, 3],
            [1.0, 1.0],
            r"client 1: head\.weight has shape \(3, 3\), client 0 has \(2, 3\)",
        ),
        (
            [_random_state(2, seed=0), {**_random_state(3, seed=1), "m.q" + A: torch.zeros(3, 9)}],
            [2, 3],
            [1.0, 1.0],
            r"client 1: m\.q\.lora_A\.weight has shape \(3, 9\), incompatible",
        ),
        (
            [{k: v for k, v in _random_state(2, seed=0).items() if k != "m.v" + B}],
            [2],
            [1.0],
            r"client 0: m\.v\.lora_A\.weight has no matching m\.v\.lora_B\.weight",
        ),
        (
            [{**_random_state(2, seed=0), "emb.lora_embedding_A": torch.zeros(2, 4)}],
            [2],
            [1.0],
            "not supported",
        ),
    ],
)
def test_bad_inputs_raise_value_error_naming_client_and_key(
    states: list[dict[str, torch.Tensor]], ranks: list[int], weights: list[float], message: str
) -> None:
    for aggregate in (hetlora_aggregate, flora_stack):
        with pytest.raises(ValueError, match=message) as caught:
            aggregate(states, ranks, weights, 8.0)
        assert "\n" not in str(caught.value)


def test_bad_truncation_and_delta_arguments_raise_value_error() -> None:
    state = _random_state(4, seed=0)
    with pytest.raises(ValueError, match="larger rank 5"):
        hetlora_truncate(state, 5, 8.0, 4)
    with pytest.raises(ValueError, match=r"global state: m\.q\.lora_A\.weight has rank 4 but the rank given is 6"):
        hetlora_truncate(state, 2, 8.0, 6)
    with pytest.raises(ValueError, match="rank 4 but the rank given is 3"):
        lora_deltas(state, 8.0, 3)
    with pytest.raises(ValueError, match="alpha must be a positive"):
        lora_deltas(state, 0.0, 4)
    with pytest.raises(ValueError, match="one alpha per client"):
        flora_stack([state], [4], [1.0], [8.0, 8.0])
