"""Robust aggregators: golden numbers by hand, and the robustness each rule promises against far-off attackers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fleettune.aggregation.clustering import cosine_distances, majority_cluster
from fleettune.aggregation.robust import (
    AGGREGATORS,
    Bulyan,
    Flame,
    Krum,
    flatten_updates,
    make_aggregator,
    unflatten_update,
)
from fleettune.errors import ConfigError, InputError

NAMES = ["bulyan", "fedavg", "flame", "foolsgold", "krum", "median", "multikrum", "normbound", "trimmed_mean"]


def scalars(values: list[float]) -> list[dict[str, torch.Tensor]]:
    return [{"v": torch.tensor([x], dtype=torch.float64)} for x in values]


def as_state(row: torch.Tensor) -> dict[str, torch.Tensor]:
    """A float32 state of two tensors, so flattening crosses a key boundary."""
    return {"a": row[:1].to(torch.float32).clone(), "b": row[1:].reshape(1, -1).to(torch.float32).clone()}


def as_vector(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([state["a"].reshape(-1), state["b"].reshape(-1)]).to(torch.float64)


@st.composite
def attacked(draw: st.DrawFn, *, min_factor: int, arbitrary: bool = False) -> tuple[torch.Tensor, list[int], int]:
    """(matrix, honest row indices, f): n - f honest rows in [-1, 1]^d and f attackers, n >= min_factor * f + 3.

    Attackers sit at least 1e3 away from the honest box, or anywhere in [-1e6, 1e6] when `arbitrary`.
    """
    f = draw(st.integers(0, 2))
    d = draw(st.integers(2, 4))
    honest_count = draw(st.integers((min_factor - 1) * f + 3, (min_factor - 1) * f + 5))
    unit = st.floats(-1, 1, width=32)
    honest = [[draw(unit) for _ in range(d)] for _ in range(honest_count)]
    if arbitrary:
        far = st.floats(-1e6, 1e6, width=32)
    else:
        far = st.builds(lambda s, m: s * m, st.sampled_from([-1.0, 1.0]), st.floats(1e3, 1e5, width=32))
    attackers = [[draw(far) for _ in range(d)] for _ in range(f)]
    order = draw(st.permutations(range(honest_count + f)))
    rows = [(honest + attackers)[i] for i in order]
    honest_rows = [pos for pos, i in enumerate(order) if i < honest_count]
    return torch.tensor(rows, dtype=torch.float64), honest_rows, f


def within_honest_range(result: torch.Tensor, matrix: torch.Tensor, honest: list[int]) -> bool:
    low = matrix[honest].min(dim=0).values
    high = matrix[honest].max(dim=0).values
    slack = 1e-6
    return bool(((result >= low - slack) & (result <= high + slack)).all())


# --- golden numbers --------------------------------------------------------------------------------------------


def test_fedavg_is_the_weighted_mean_with_weights_rescaled_to_sum_one() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([[0.0]])}
    b = {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor([[4.0]])}
    out = make_aggregator("fedavg")([a, b], [2, 6])
    assert torch.equal(out["w"], torch.tensor([2.5, 5.0]))
    assert torch.equal(out["b"], torch.tensor([[3.0]]))
    assert out["w"].dtype == torch.float32


def test_krum_golden() -> None:
    # n=5, f=1: each score sums the squared distances to the 2 nearest others.
    # 0 -> 1+4 = 5, 1 -> 1+1 = 2, 2 -> 1+4 = 5, 10 -> 64+81 = 145, 100 -> 8100+8281.
    result = make_aggregator("krum", byzantine=1).aggregate(scalars([0, 1, 2, 10, 100]), [1] * 5)
    assert result.selected == (1,)
    assert result.state["v"].tolist() == [1.0]


def test_multikrum_golden_averages_the_best_scores_with_their_weights() -> None:
    # Same scores as above: best three are 1, then 0 and 2 (tied at 5, lower index first).
    agg = make_aggregator("multikrum", byzantine=1, multi=3)
    result = agg.aggregate(scalars([0, 1, 2, 10, 100]), [1, 1, 2, 1, 1])
    assert result.selected == (1, 0, 2)
    assert result.state["v"].tolist() == [pytest.approx((0 * 1 + 1 * 1 + 2 * 2) / 4)]
    # multi=None keeps n - f = 4 updates: 0, 1, 2 and 10.
    kept = make_aggregator("multikrum", byzantine=1).aggregate(scalars([0, 1, 2, 10, 100]), [1] * 5).selected
    assert kept == (1, 0, 2, 3)


def test_median_golden_odd_and_even() -> None:
    median = make_aggregator("median")
    assert median(scalars([10, 0, 100, 2, 1]), [1] * 5)["v"].tolist() == [2.0]
    assert median(scalars([10, 0, 2, 1]), [1] * 4)["v"].tolist() == [1.5]
    two_d = [{"v": torch.tensor([1.0, 9.0])}, {"v": torch.tensor([5.0, 3.0])}, {"v": torch.tensor([3.0, 4.0])}]
    assert median(two_d, [1, 1, 1])["v"].tolist() == [3.0, 4.0]


def test_trimmed_mean_golden() -> None:
    # trim 0.2 of 5 drops one value per side: mean(1, 2, 10) = 13/3.
    out = make_aggregator("trimmed_mean", trim=0.2)(scalars([10, 0, 100, 2, 1]), [1] * 5)
    assert out["v"].item() == pytest.approx(13 / 3)
    # 0.29 * 100 must drop 29 per side, not 28.
    values = [float(i) for i in range(100)]
    out = make_aggregator("trimmed_mean", trim=0.29)(scalars(values), [1] * 100)
    assert out["v"].item() == pytest.approx(sum(range(29, 71)) / 42)


def test_bulyan_golden() -> None:
    # n=7, f=1: five Krum rounds over the rest (neighbours = remaining - 3):
    #   [0,1,3,4,9,50,100] scores 107, 78, 50, 51, 206, ... -> 3 (index 2)
    #   [0,1,4,9,50,100]   scores 98, 74, 50, 170, ...    -> 4 (index 3)
    #   [0,1,9,50,100]     scores 82, 65, 145, ...        -> 1 (index 1)
    #   [0,9,50,100]       scores 81, 81, 1681, 2500      -> 0 (index 0, the lower of a tie)
    #   [9,50,100]         no neighbours, all 0           -> 9 (index 4)
    # Then the 5 - 2 = 3 values nearest the median 3 of {3, 4, 1, 0, 9}: 3, 4, 1 -> 8/3.
    result = Bulyan(byzantine=1).aggregate(scalars([0, 1, 3, 4, 9, 50, 100]), [1] * 7)
    assert result.selected == (2, 3, 1, 0, 4)
    assert result.state["v"].item() == pytest.approx(8 / 3)


def test_normbound_golden() -> None:
    # [3, 4] has norm 5 and is scaled to norm 2: [1.2, 1.6]; [0, 1] is within the bound.
    updates = [{"v": torch.tensor([3.0, 4.0], dtype=torch.float64)}, {"v": torch.tensor([0.0, 1.0])}]
    result = make_aggregator("normbound", clip=2.0).aggregate(updates, [1, 1])
    assert result.clipped == (0,)
    torch.testing.assert_close(result.state["v"], torch.tensor([0.6, 1.3], dtype=torch.float64))
    assert updates[0]["v"].tolist() == [3.0, 4.0]  # inputs are never modified


def test_clip_applies_before_any_rule() -> None:
    result = make_aggregator("median", clip=1.0).aggregate(scalars([-4, 0.5, 3]), [1, 1, 1])
    assert result.clipped == (0, 2)
    assert result.state["v"].item() == 0.5


def test_flame_golden() -> None:
    # Four updates along +x (norms 1, 2, 3, 4) and two along +y (norms 10, 10): the +y pair is no majority and
    # is dropped. The median norm of all six is (3 + 4) / 2 = 3.5, so the kept 4 is clipped to 3.5 and the mean
    # of 1, 2, 3, 3.5 along x is 2.375; the noise asked for is lambda x 3.5.
    rows = [[1.0, 0.0], [0.0, 10.0], [2.0, 0.0], [3.0, 0.0], [0.0, 10.0], [4.0, 0.0]]
    updates = [{"v": torch.tensor(r, dtype=torch.float64)} for r in rows]
    result = Flame(noise=0.01).aggregate(updates, [1.0, 9.0, 1.0, 1.0, 9.0, 1.0])
    assert result.selected == (0, 2, 3, 5)
    assert result.state["v"].tolist() == [2.375, 0.0]
    assert result.noise_std == pytest.approx(0.035, abs=1e-15)


def test_cosine_distances_golden_and_zero_rows() -> None:
    matrix = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    expected = [[0, 1, 2, 1], [1, 0, 1, 1], [2, 1, 0, 1], [1, 1, 1, 0]]
    assert cosine_distances(matrix).tolist() == expected


def test_majority_cluster_keeps_everything_when_there_is_no_majority_to_find() -> None:
    assert majority_cluster(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)) == [0, 1]
    assert majority_cluster(torch.zeros(5, 3, dtype=torch.float64)) == [0, 1, 2, 3, 4]


def test_flatten_round_trip_keeps_shapes_dtypes_and_key_order() -> None:
    state = {"b": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a": torch.tensor([7.0], dtype=torch.float16)}
    matrix, layout = flatten_updates([state])
    assert matrix.dtype == torch.float64
    assert matrix[0].tolist() == [0, 1, 2, 3, 4, 5, 7]
    back = unflatten_update(matrix[0], layout)
    assert list(back) == ["b", "a"]
    assert back["a"].dtype == torch.float16
    assert torch.equal(back["b"], state["b"])


# --- robustness ------------------------------------------------------------------------------------------------


@given(attacked(min_factor=2))
def test_krum_returns_one_of_the_honest_updates(case: tuple[torch.Tensor, list[int], int]) -> None:
    matrix, honest, f = case
    result = Krum(byzantine=f).aggregate([as_state(row) for row in matrix], [1.0] * len(matrix))
    assert result.selected[0] in honest
    assert torch.equal(as_vector(result.state), matrix[result.selected[0]])


@given(attacked(min_factor=2), st.data())
def test_multikrum_averages_only_honest_updates(case: tuple[torch.Tensor, list[int], int], data: st.DataObject) -> None:
    matrix, honest, f = case
    n = len(matrix)
    multi = data.draw(st.integers(1, n - f))
    weights = data.draw(st.lists(st.floats(0.1, 10), min_size=n, max_size=n))
    result = Krum(byzantine=f, multi=multi).aggregate([as_state(row) for row in matrix], weights)
    assert len(result.selected) == multi
    assert set(result.selected) <= set(honest)
    w = torch.tensor([weights[i] for i in result.selected], dtype=torch.float64)
    expected = (w / w.sum()) @ matrix[list(result.selected)]
    torch.testing.assert_close(as_vector(result.state), expected, atol=1e-6, rtol=1e-6)


@given(attacked(min_factor=2, arbitrary=True))
def test_median_stays_within_the_honest_range(case: tuple[torch.Tensor, list[int], int]) -> None:
    matrix, honest, _ = case  # f < n / 2 since n >= 2f + 3
    out = make_aggregator("median")([as_state(row) for row in matrix], [1.0] * len(matrix))
    assert within_honest_range(as_vector(out), matrix, honest)


@given(attacked(min_factor=2, arbitrary=True), st.floats(0, 0.49))
def test_trimmed_mean_stays_within_the_honest_range(case: tuple[torch.Tensor, list[int], int], extra: float) -> None:
    matrix, honest, f = case
    n = len(matrix)
    trim = min(f / n + extra * (0.5 - f / n), 0.499)  # any trim with f <= trim * n
    out = make_aggregator("trimmed_mean", trim=trim)([as_state(row) for row in matrix], [1.0] * n)
    assert within_honest_range(as_vector(out), matrix, honest)


@given(attacked(min_factor=4))
def test_bulyan_stays_within_the_honest_range(case: tuple[torch.Tensor, list[int], int]) -> None:
    matrix, honest, f = case
    result = Bulyan(byzantine=f).aggregate([as_state(row) for row in matrix], [1.0] * len(matrix))
    assert len(result.selected) == len(matrix) - 2 * f
    assert within_honest_range(as_vector(result.state), matrix, honest)


@st.composite
def backdoored(draw: st.DrawFn) -> tuple[torch.Tensor, list[int]]:
    """(matrix, honest row indices): honest rows within a few degrees of one direction, any norms in [0.1, 10],
    and fewer attackers than honest rows pointing at least 90 degrees away from it, norms in [0.1, 100]."""
    d = draw(st.integers(3, 6))
    f = draw(st.integers(0, 3))
    honest_count = draw(st.integers(f + 1, f + 4))
    base = torch.zeros(d, dtype=torch.float64)
    base[0] = 1.0
    wobble = st.floats(-0.02, 0.02)
    honest = [
        draw(st.floats(0.1, 10)) * (base + torch.tensor([0.0] + [draw(wobble) for _ in range(d - 1)]))
        for _ in range(honest_count)
    ]
    attackers = []
    for _ in range(f):
        direction = torch.tensor([draw(st.floats(-1, 0))] + [draw(st.floats(-1, 1)) for _ in range(d - 1)])
        if float(torch.linalg.vector_norm(direction[1:])) < 0.1:
            direction[1] = 1.0
        attackers.append(draw(st.floats(0.1, 100)) * direction / torch.linalg.vector_norm(direction))
    order = draw(st.permutations(range(honest_count + f)))
    rows = [(honest + attackers)[i] for i in order]
    return torch.stack(rows).to(torch.float64), [pos for pos, i in enumerate(order) if i < honest_count]


@given(backdoored())
def test_flame_keeps_a_majority_of_honest_updates_only_and_bounds_the_result(
    case: tuple[torch.Tensor, list[int]],
) -> None:
    # HDBSCAN's densities are relative: even among honest rows a few degrees apart it may call the loneliest an
    # outlier, so what is promised is a majority of the rows, all honest, not every honest row.
    matrix, honest = case
    n = len(matrix)
    result = Flame().aggregate([{"v": row} for row in matrix], [1.0] * n)
    if n < 3:  # no majority to find: every row is kept
        assert list(result.selected) == list(range(n))
    else:
        assert set(result.selected) <= set(honest) and len(result.selected) >= n // 2 + 1
    median = float(torch.linalg.vector_norm(matrix, dim=1).median()) if len(matrix) % 2 else None
    norm = float(torch.linalg.vector_norm(result.state["v"]))
    assert norm <= float(torch.linalg.vector_norm(matrix, dim=1).max()) * (1 + 1e-9)
    if median is not None:
        assert norm <= median * (1 + 1e-9)


@given(
    st.lists(st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3), min_size=2, max_size=6),
    st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3),
    st.floats(0.1, 10),
    st.data(),
)
def test_normbound_caps_what_any_one_client_can_move(
    rows: list[list[float]], replacement: list[float], clip: float, data: st.DataObject
) -> None:
    n = len(rows)
    weights = data.draw(st.lists(st.floats(0.1, 10), min_size=n, max_size=n))
    victim = data.draw(st.integers(0, n - 1))
    agg = make_aggregator("normbound", clip=clip)
    updates = [{"v": torch.tensor(r, dtype=torch.float64)} for r in rows]
    before = agg(updates, weights)["v"]
    updates[victim] = {"v": torch.tensor(replacement, dtype=torch.float64)}
    after = agg(updates, weights)["v"]
    share = weights[victim] / sum(weights)
    assert float(torch.linalg.vector_norm(before)) <= clip * (1 + 1e-9)
    assert float(torch.linalg.vector_norm(after - before)) <= 2 * share * clip * (1 + 1e-9) + 1e-12


@given(
    st.lists(st.floats(-10, 10, width=32), min_size=1, max_size=4),
    st.integers(3, 8),
    st.sampled_from([name for name in NAMES if name != "foolsgold"]),  # to FoolsGold equal inputs are sybils
)
def test_equal_inputs_without_attackers_give_the_input(values: list[float], n: int, name: str) -> None:
    state = {"v": torch.tensor(values, dtype=torch.float32)}
    agg = make_aggregator(name, clip=1e3 if name == "normbound" else None)
    out = agg([state] * n, [1.0] * n)
    torch.testing.assert_close(out["v"], state["v"])


# --- parameters ------------------------------------------------------------------------------------------------


def test_every_rule_is_registered() -> None:
    assert AGGREGATORS.names() == NAMES
    with pytest.raises(InputError, match="expected one of: bulyan, fedavg, flame"):
        make_aggregator("mean")


@pytest.mark.parametrize(
    ("name", "params", "count", "message"),
    [
        ("krum", {"byzantine": 2}, 6, "at least 2f\\+3 = 7 updates, got 6"),
        ("multikrum", {"byzantine": 1, "multi": 5}, 5, "between 1 and n - f = 4"),
        ("bulyan", {"byzantine": 1}, 6, "at least 4f\\+3 = 7 updates, got 6"),
    ],
)
def test_too_many_attackers_for_the_fleet_is_a_config_error(
    name: str, params: dict[str, int], count: int, message: str
) -> None:
    agg = make_aggregator(name, **params)
    with pytest.raises(ConfigError, match=message):
        agg(scalars([float(i) for i in range(count)]), [1.0] * count)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("trimmed_mean", {"trim": -0.1}),
        ("trimmed_mean", {"trim": 0.5}),
        ("normbound", {}),
        ("normbound", {"clip": 0.0}),
        ("median", {"clip": -1.0}),
        ("krum", {"byzantine": -1}),
        ("bulyan", {"byzantine": 1.5}),
        ("multikrum", {"multi": 0}),
        ("krum", {"multi": 3}),
        ("flame", {"noise": -0.1}),
        ("flame", {"noise": float("nan")}),
    ],
)
def test_bad_parameters_are_config_errors(name: str, params: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        make_aggregator(name, **params)


def test_programming_errors_are_value_errors() -> None:
    agg = make_aggregator("fedavg")
    with pytest.raises(ValueError, match="one weight per update"):
        agg(scalars([1, 2]), [1.0])
    with pytest.raises(ValueError, match="different keys"):
        agg([{"x": torch.zeros(1)}, {"y": torch.zeros(1)}], [1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        agg(scalars([1, 2]), [1.0, -1.0])
    with pytest.raises(ValueError, match="at least one update"):
        agg([], [])
