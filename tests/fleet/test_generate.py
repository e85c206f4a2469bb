"""Generated fleets: deterministic per seed, catalogue kinds only, link ranges, and `gen:N:SEED` names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleettune.errors import FleetError
from fleettune.fleet import CATALOG
from fleettune.fleet.generate import SERVER_KINDS, device_kinds, generate_fleet, parse_generated


def test_same_seed_gives_the_same_fleet() -> None:
    assert generate_fleet(20, seed=3) == generate_fleet(20, seed=3)


def test_different_seeds_give_different_fleets() -> None:
    kinds = {tuple(d.hardware.kind for d in generate_fleet(20, seed=s).devices) for s in range(5)}
    assert len(kinds) == 5


@given(n=st.integers(1, 60), seed=st.integers(0, 2**32 - 1))
def test_devices_are_non_server_catalogue_kinds_with_unique_ids(n: int, seed: int) -> None:
    fleet = generate_fleet(n, seed)
    assert len(fleet.devices) == n
    assert fleet.server == CATALOG["rtx-4080-super"]
    for i, device in enumerate(fleet.devices):
        assert device.hardware == CATALOG[device.hardware.kind]
        assert device.hardware.kind not in SERVER_KINDS
        assert device.id == f"{device.hardware.kind}-{i}"
        assert device.cut_layer == 1  # as a fleet file's default; "auto" only when asked for


def test_default_kinds_are_every_device_kind_of_the_catalogue() -> None:
    assert set(device_kinds()) == set(CATALOG) - {"rtx-4080-super"}
    drawn = {d.hardware.kind for d in generate_fleet(500, seed=0).devices}
    assert drawn == set(device_kinds())


def test_kinds_restrict_the_draw() -> None:
    fleet = generate_fleet(30, seed=1, kinds=["jetson-nano", "apple-m3"], cut_layer=2)
    assert {d.hardware.kind for d in fleet.devices} == {"jetson-nano", "apple-m3"}
    assert all(d.cut_layer == 2 for d in fleet.devices)


def test_auto_cuts_when_asked_for() -> None:
    assert {d.cut_layer for d in generate_fleet(5, seed=0, cut_layer="auto").devices} == {"auto"}


def test_fixed_rates_are_used_as_given() -> None:
    fleet = generate_fleet(4, seed=0, uplink_mbps=20.0, downlink_mbps=80.0, latency_ms=3.0)
    assert {(d.link.uplink_mbps, d.link.downlink_mbps, d.link.latency_ms) for d in fleet.devices} == {(20.0, 80.0, 3.0)}


def test_rate_ranges_are_drawn_per_device_within_bounds() -> None:
    fleet = generate_fleet(50, seed=0, uplink_mbps=(10.0, 100.0), downlink_mbps=(50.0, 1000.0))
    ups = [d.link.uplink_mbps for d in fleet.devices]
    downs = [d.link.downlink_mbps for d in fleet.devices]
    assert all(10.0 <= u <= 100.0 for u in ups) and all(50.0 <= d <= 1000.0 for d in downs)
    assert len(set(ups)) == 50
    # Rates are drawn after kinds: a range does not change which kinds a seed gives.
    assert [d.hardware for d in fleet.devices] == [d.hardware for d in generate_fleet(50, seed=0).devices]


@pytest.mark.parametrize("n", [0, -3, 2.5, True, 100_001])
def test_n_must_be_an_integer_in_range(n: object) -> None:
    with pytest.raises(FleetError, match=r"n \(the number of devices\) must be an integer in 1\.\.100000"):
        generate_fleet(n, seed=0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kinds": ["toaster"]}, "unknown device kind 'toaster'"),
        ({"kinds": []}, "at least one catalogue kind"),
        ({"uplink_mbps": 0.0}, "uplink_mbps must be > 0"),
        ({"downlink_mbps": (100.0, 10.0)}, "downlink_mbps must be > 0"),
        ({"cut_layer": 0}, "cut_layer must be"),
        ({"cut_layer": "deep"}, "cut_layer must be"),
        ({"server_kind": "mainframe"}, "unknown device kind 'mainframe'"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(FleetError, match=message):
        generate_fleet(3, seed=0, **kwargs)  # type: ignore[arg-type]


def test_generated_names_parse_to_the_generated_fleet() -> None:
    assert parse_generated("gen:20:3") == generate_fleet(20, seed=3)
    assert parse_generated("gen:5") == generate_fleet(5, seed=0)
    assert generate_fleet(20, seed=3).name == "gen:20:3"


def test_other_names_are_not_generated_fleets() -> None:
    assert parse_generated("paper6") is None
    assert parse_generated("fleets/gen.toml") is None


@pytest.mark.parametrize("name", ["gen:", "gen:x", "gen:3:-1", "gen:3:4:5"])
def test_malformed_generated_names_fail_with_the_expected_form(name: str) -> None:
    with pytest.raises(FleetError, match="expected gen:N or gen:N:SEED"):
        parse_generated(name)


def test_a_generated_fleet_of_zero_devices_is_refused() -> None:
    with pytest.raises(FleetError, match=r"in 1\.\.100000, got 0"):
        parse_generated("gen:0")
