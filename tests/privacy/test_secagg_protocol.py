"""End-to-end aggregation: exact sums for several fleet sizes and thresholds, with and without dropouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fleettune.privacy.secagg import (
    FixedPoint,
    SecAggConfig,
    SecAggError,
    check_threshold,
    flatten_state,
    min_threshold,
    secure_sum,
    unflatten_state,
)
from tests.privacy.secagg_support import Run, encoded_sum, make_config, random_inputs

LENGTH = 3000


@pytest.mark.parametrize(("n", "threshold"), [(2, 2), (3, 2), (4, 3), (6, 4), (6, 6), (10, 6), (10, 8)])
def test_sum_is_exactly_the_sum_of_encodings(n: int, threshold: int) -> None:
    config = make_config(n, threshold, LENGTH)
    inputs = random_inputs(config, seed=n)
    aggregate = Run(config, seed=n).all(inputs)
    assert aggregate.included == config.clients and aggregate.dropped == ()
    np.testing.assert_array_equal(aggregate.ring_sum, encoded_sum(config, inputs, config.clients))
    plain = np.sum(list(inputs.values()), axis=0)
    assert np.max(np.abs(aggregate.values - plain)) <= n * config.codec.resolution


@pytest.mark.parametrize(("n", "threshold", "dropped"), [(6, 4, 2), (10, 6, 3), (10, 7, 3)])
def test_thirty_percent_dropping_before_their_masked_input_leaves_the_survivors_sum(
    n: int, threshold: int, dropped: int
) -> None:
    vectors = {f"dev{i}": np.random.default_rng(i).normal(0, 0.3, LENGTH) for i in range(n)}
    gone = {f"dev{i}" for i in range(1, n, n // dropped)[:dropped]}
    result = secure_sum(vectors, threshold, drop_after_sharing=gone, clip=2.0, rng=7)
    survivors = tuple(c for c in vectors if c not in gone)
    assert result.included == survivors and set(result.dropped) == gone
    expected = sum(result.codec.ring.to_signed(result.codec.encode(vectors[c])).astype(np.int64) for c in survivors)
    np.testing.assert_array_equal(result.codec.ring.to_signed(result.ring_sum), expected)
    plain = np.sum([vectors[c] for c in survivors], axis=0)
    assert np.max(np.abs(result.values - plain)) <= len(survivors) * result.codec.resolution


def test_clients_dropping_after_their_masked_input_are_still_in_the_sum() -> None:
    vectors = {f"dev{i}": np.random.default_rng(i).uniform(-1, 1, LENGTH) for i in range(10)}
    result = secure_sum(vectors, 6, drop_after_masking={"dev2", "dev5", "dev9"}, rng=3)
    assert result.included == tuple(vectors) and result.dropped == ()
    expected = sum(result.codec.ring.to_signed(result.codec.encode(v)).astype(np.int64) for v in vectors.values())
    np.testing.assert_array_equal(result.codec.ring.to_signed(result.ring_sum), expected)
    assert result.upload_bytes("dev2") > 0 and result.client_sent["dev2"]["unmask"] == 0


def test_dropouts_at_every_point_together() -> None:
    vectors = {f"dev{i}": np.full(50, float(i) / 10) for i in range(10)}
    result = secure_sum(
        vectors, 6, drop_after_advertise={"dev0"}, drop_after_sharing={"dev4"}, drop_after_masking={"dev7"}, rng=1
    )
    assert result.dropped == ("dev0", "dev4")
    np.testing.assert_allclose(result.values, sum(i / 10 for i in range(10) if i not in (0, 4)), atol=1e-6)


def test_too_many_dropouts_is_a_clear_error() -> None:
    vectors = {f"dev{i}": np.zeros(8) for i in range(10)}
    with pytest.raises(ValueError, match=r"4 of 10 clients drop, leaving 6 to finish; threshold 7 tolerates at most 3"):
        secure_sum(vectors, 7, drop_after_sharing={"dev0", "dev1"}, drop_after_masking={"dev2", "dev3"})


def test_the_server_refuses_to_close_a_round_below_threshold() -> None:
    config = make_config(10, 7, 16)
    inputs = random_inputs(config)
    run = Run(config)
    run.advertise()
    run.share()
    with pytest.raises(SecAggError, match="only 6 clients sent masked inputs; the threshold is 7"):
        run.mask(inputs, skip={"dev1", "dev2", "dev3", "dev4"})

    run = Run(config)
    run.advertise()
    run.share()
    run.mask(inputs, skip={"dev1", "dev2", "dev3"})
    with pytest.raises(SecAggError, match="only 6 clients answered the unmask request; the threshold is 7"):
        run.unmask(skip={"dev4"})


def test_threshold_validation() -> None:
    assert [min_threshold(n) for n in (2, 3, 4, 5, 6, 10)] == [2, 2, 3, 3, 4, 6]
    vectors = {f"dev{i}": np.zeros(4) for i in range(6)}
    with pytest.raises(ValueError, match="threshold 7 exceeds the number of clients 6"):
        secure_sum(vectors, 7)
    with pytest.raises(
        ValueError, match="threshold 3 is too low for 6 clients: it must be a strict majority, at least 4"
    ):
        secure_sum(vectors, 3)
    with pytest.raises(ValueError, match="at least 4"):
        check_threshold(1, 6)
    with pytest.raises(ValueError, match="needs at least 2 clients"):
        secure_sum({"solo": np.zeros(4)}, 1)
    with pytest.raises(ValueError, match="drop_after_masking names unknown clients"):
        secure_sum(vectors, 4, drop_after_masking={"ghost"})
    with pytest.raises(ValueError, match="one length"):
        secure_sum({"a": np.zeros(4), "b": np.zeros(5)}, 2)
    with pytest.raises(ValueError, match="unique"):
        SecAggConfig(("a", "a"), 2, 4, FixedPoint(8, 1.0))


def test_a_fixed_seed_replays_the_run_and_clipping_is_counted() -> None:
    vectors = {"a": np.array([0.5, 3.0, -2.0]), "b": np.array([0.25, 0.0, 0.0])}
    first = secure_sum(vectors, 2, rng=11, clip=1.0)
    second = secure_sum(vectors, 2, rng=11, clip=1.0)
    np.testing.assert_array_equal(first.ring_sum, second.ring_sum)
    assert first.clipped == {"a": 2, "b": 0}
    np.testing.assert_allclose(first.values, [0.75, 1.0, -1.0], atol=1e-8)


def test_adapter_states_flatten_sum_and_unflatten() -> None:
    generator = torch.Generator().manual_seed(0)
    states = {
        f"dev{i}": {
            "layer.1.lora_B": torch.randn(8, 4, generator=generator) * 0.1,
            "layer.0.lora_A": (torch.randn(4, 16, generator=generator) * 0.1).to(torch.bfloat16),
        }
        for i in range(4)
    }
    flat = {c: flatten_state(s) for c, s in states.items()}
    layout = flat["dev0"][1]
    assert [name for name, _, _ in layout.entries] == ["layer.0.lora_A", "layer.1.lora_B"]
    assert layout.size == 96
    result = secure_sum({c: torch.from_numpy(v) for c, (v, _) in flat.items()}, 3, rng=0)
    total = unflatten_state(result.values, layout)
    assert total["layer.0.lora_A"].dtype == torch.bfloat16 and total["layer.1.lora_B"].shape == (8, 4)
    expected = torch.stack([s["layer.1.lora_B"] for s in states.values()]).sum(0)
    assert torch.allclose(total["layer.1.lora_B"], expected, atol=4 * result.codec.resolution)
    with pytest.raises(ValueError, match="does not fit a layout of 96 values"):
        unflatten_state(np.zeros(95), layout)


@settings(max_examples=12)
@given(
    n=st.integers(2, 6),
    data=st.data(),
)
def test_random_fleets_and_dropouts_sum_exactly(n: int, data: st.DataObject) -> None:
    threshold = data.draw(st.integers(min_threshold(n), n))
    spare = n - threshold
    order = data.draw(st.permutations([f"c{i}" for i in range(n)]))
    cuts = sorted(data.draw(st.lists(st.integers(0, spare), min_size=2, max_size=2)))
    before, after = set(order[: cuts[0]]), set(order[cuts[0] : cuts[1]])
    vectors = {c: np.random.default_rng(i).uniform(-1, 1, 20) for i, c in enumerate(sorted(order))}
    result = secure_sum(
        vectors, threshold, drop_after_sharing=before, drop_after_masking=after, rng=data.draw(st.integers(0, 99))
    )
    included = [c for c in vectors if c not in before]
    expected = sum(result.codec.ring.to_signed(result.codec.encode(vectors[c])).astype(np.int64) for c in included)
    np.testing.assert_array_equal(result.codec.ring.to_signed(result.ring_sum), expected)
