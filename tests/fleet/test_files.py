"""Fleet files: the shipped paper6 fleet, custom profiles, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleettune.errors import FleetError
from fleettune.fleet import CATALOG, load_fleet, shipped_fleets


def test_paper6_is_the_case_study() -> None:
    fleet = load_fleet("paper6")
    assert "paper6" in shipped_fleets()
    assert [d.cut_layer for d in fleet.devices] == [1, 1, 2, 2, 3, 3]
    assert [d.hardware.tflops for d in fleet.devices] == [0.472, 1.33, 1.689, 2.774, 2.147, 3.533]
    assert all(d.link.uplink_mbps == 100 and d.link.downlink_mbps == 100 for d in fleet.devices)
    assert fleet.server.tflops == 52.2


def test_catalogue_has_common_iot_devices() -> None:
    for kind in ("raspberry-pi-4", "raspberry-pi-5", "jetson-orin-nano", "midrange-phone"):
        assert kind in CATALOG


def test_custom_device_numbers_override_the_catalogue(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        'name = "mine"\n[server]\ntflops = 10\nmemory_gib = 8\npower_w = 100\n'
        '[[device]]\nid = "pi"\nkind = "raspberry-pi-5"\nmemory_gib = 4\ncut_layer = "auto"\n'
    )
    fleet = load_fleet(str(path))
    assert fleet.server.tflops == 10
    assert fleet.devices[0].hardware.memory_gib == 4 and fleet.devices[0].hardware.tflops == 0.031
    assert fleet.devices[0].cut_layer == "auto"


def test_lora_rank_is_an_integer_auto_or_unset(tmp_path: Path) -> None:
    path = tmp_path / "ranks.toml"
    path.write_text(
        'name = "ranks"\n[server]\nkind = "rtx-4080-super"\n'
        '[[device]]\nid = "a"\nkind = "jetson-nano"\nlora_rank = "auto"\n'
        '[[device]]\nid = "b"\nkind = "jetson-nano"\nlora_rank = 8\n'
        '[[device]]\nid = "c"\nkind = "jetson-nano"\n'
    )
    assert [d.lora_rank for d in load_fleet(str(path)).devices] == ["auto", 8, None]


def test_resized_fleet_cycles_devices_with_unique_ids() -> None:
    fleet = load_fleet("paper6").resized(8)
    ids = [d.id for d in fleet.devices]
    assert len(set(ids)) == 8 and fleet.devices[6].hardware.kind == "jetson-nano"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('name = "x"\n[server]\nkind = "rtx-4080-super"\n', "device"),
        ('name = "x"\n[server]\nkind = "toaster"\n[[device]]\nid = "a"\nkind = "jetson-nano"\n', "toaster"),
        (
            'name = "x"\n[server]\nkind = "rtx-4080-super"\n'
            '[[device]]\nid = "a"\nkind = "jetson-nano"\ncut_layer = 0\n',
            "cut_layer",
        ),
        (
            'name = "x"\n[server]\nkind = "rtx-4080-super"\n[[device]]\nid = "a"\nkind = "jetson-nano"\n'
            '[[device]]\nid = "a"\nkind = "jetson-nano"\n',
            "unique",
        ),
        (
            'name = "x"\n[server]\nkind = "rtx-4080-super"\n'
            '[[device]]\nid = "a"\nkind = "jetson-nano"\nlora_rank = "big"\n',
            'lora_rank must be an integer >= 1 or "auto"',
        ),
        (
            'name = "x"\n[server]\nkind = "rtx-4080-super"\n'
            '[[device]]\nid = "a"\nkind = "jetson-nano"\nlora_rank = 0\n',
            "lora_rank must be >= 1",
        ),
        ('[[device]]\nkind = "jetson-nano"\ncut_layer = true\n', "device.0.cut_layer: Input should be a valid integer"),
        ('[[device]]\nkind = "jetson-nano"\nlora_rank = 1.5\n', "device.0.lora_rank: Input should be a valid integer"),
        (
            '[[device]]\nkind = "jetson-nano"\nuplink_mbps = inf\n',
            "device.0.uplink_mbps: Input should be a finite number",
        ),
        ('[[device]]\nkind = "jetson-nano"\ndownlink_mbps = 1e-320\n', "downlink_mbps: Input should be greater than"),
    ],
)
def test_bad_fleet_files_are_one_line_errors(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(FleetError, match=message) as info:
        load_fleet(str(path))
    assert "\n" not in str(info.value)


def test_unknown_fleet_name() -> None:
    with pytest.raises(FleetError, match="paper6"):
        load_fleet("nowhere")


def test_a_fleet_file_may_give_only_its_devices(tmp_path: Path) -> None:
    """The name defaults to the file's, the server to the catalogue's edge server, ids to KIND-INDEX."""
    path = tmp_path / "two.toml"
    path.write_text('[[device]]\nkind = "jetson-nano"\n[[device]]\nkind = "apple-m3"\ncut_layer = 3\n')
    fleet = load_fleet(str(path))
    assert fleet.name == "two"
    assert fleet.server == CATALOG["rtx-4080-super"]
    assert [d.id for d in fleet.devices] == ["jetson-nano-0", "apple-m3-1"]
    assert [d.cut_layer for d in fleet.devices] == [1, 3]


def test_ids_given_for_some_devices_stay_as_given(tmp_path: Path) -> None:
    path = tmp_path / "mixed.toml"
    path.write_text(
        '[[device]]\nid = "door"\nkind = "jetson-nano"\n[[device]]\ntflops = 1\nmemory_gib = 2\npower_w = 3\n'
    )
    assert [d.id for d in load_fleet(str(path)).devices] == ["door", "device-1"]


def test_a_misspelt_section_is_named_before_the_section_it_hides(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text('[[devices]]\nkind = "jetson-nano"\n')
    message = rf"^{path}: devices: unknown key \(did you mean 'device'\?\); expected one of: device, name, server$"
    with pytest.raises(FleetError, match=message):
        load_fleet(str(path))


def test_an_unknown_kind_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "kinds.toml"
    path.write_text('[[device]]\nkind = "toaster"\n')
    with pytest.raises(FleetError, match=rf"^{path}: unknown device kind 'toaster'; expected one of: apple-a17-pro"):
        load_fleet(str(path))


def test_an_unknown_device_key_names_the_device_and_the_allowed_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text('[[device]]\nkind = "jetson-nano"\n[[device]]\nkind = "apple-m3"\nuplink_mpbs = 50\n')
    with pytest.raises(
        FleetError,
        match=r"device\.1\.uplink_mpbs: unknown key \(did you mean 'uplink_mbps'\?\); "
        r"expected one of: availability, availability_trace, cut_layer, downlink_mbps, ",
    ):
        load_fleet(str(path))
