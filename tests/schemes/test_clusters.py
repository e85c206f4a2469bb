"""How `sl` and `cpsl` form the clusters that take turns: by speed (default) or by shared cut layer."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fleettune.config import build_config
from fleettune.errors import ConfigError
from fleettune.fleet import Device, load_fleet
from fleettune.runtime.events import Activity
from fleettune.schemes.split.sequential import turn_clusters
from tests.schemes.conftest import RunScheme


@dataclass(frozen=True)
class _Party:
    device: Device


PAPER6 = [_Party(d) for d in load_fleet("paper6").devices]  # cuts 1, 1, 2, 2, 3, 3


def _ids(clusters: list[list[_Party]]) -> list[list[str]]:
    return [[p.device.id for p in cluster] for cluster in clusters]


def test_by_speed_fastest_first() -> None:
    assert _ids(turn_clusters(PAPER6, 3)) == [
        ["apple-m3", "snapdragon-8-gen3", "apple-a17-pro"],
        ["snapdragon-8s-gen3", "jetson-tx2", "jetson-nano"],
    ]
    assert _ids(turn_clusters(PAPER6, 1))[0] == ["apple-m3"]


def test_by_cut_the_devices_sharing_a_cut_deepest_first() -> None:
    pairs = [["apple-m3", "apple-a17-pro"], ["snapdragon-8-gen3", "snapdragon-8s-gen3"], ["jetson-tx2", "jetson-nano"]]
    assert _ids(turn_clusters(PAPER6, 3, "cut")) == pairs
    # at most `size` to a cluster: pairs split into single devices, still deepest cut first
    assert _ids(turn_clusters(PAPER6, 1, "cut")) == [[d] for pair in pairs for d in pair]


def test_an_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown cluster rule 'size'"):
        turn_clusters(PAPER6, 3, "size")


def test_a_cpsl_run_takes_turns_by_cut(run_scheme: RunScheme) -> None:
    """The first three paper6 devices (cuts 1, 1, 2) make one cluster of three by speed; by cut, the Snapdragon
    at cut 2 takes its turn first and the two Jetsons at cut 1 start together once it is done (each turn begins
    with the current adapter's download)."""

    def starts(cluster_by: str) -> dict[str, float]:
        result = run_scheme("cpsl", rounds=1, clients=3, cluster_by=cluster_by)
        return {e.party: e.start_s for e in result.events if e.activity == Activity.CLIENT_FORWARD}

    assert len(set(starts("speed").values())) == 1
    by_cut = starts("cut")
    assert by_cut["jetson-nano-0"] == by_cut["jetson-tx2-1"] > by_cut["snapdragon-8s-gen3-2"] + 0.01


def test_sl_ignores_the_cluster_rule(run_scheme: RunScheme) -> None:
    plain = run_scheme("sl", rounds=1, clients=3)
    ruled = run_scheme("sl", rounds=1, clients=3, cluster_by="cut")
    assert ruled.step_losses == plain.step_losses


def test_the_config_names_the_rules() -> None:
    with pytest.raises(ConfigError, match="cluster_by") as error:
        build_config(overrides=["cluster_by=size"])
    assert "\n" not in str(error.value) and "'speed'" in str(error.value) and "'cut'" in str(error.value)
