"""Availability settings in fleet files and trace files, with one-line errors naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleettune.errors import FleetError
from fleettune.fleet import load_fleet

HEAD = 'name = "pair"\n[server]\nkind = "rtx-4080-super"\n'


def _fleet(tmp_path: Path, first: str = "", second: str = "") -> str:
    path = tmp_path / "pair.toml"
    path.write_text(
        f'{HEAD}[[device]]\nid = "a"\nkind = "apple-m3"\n{first}\n[[device]]\nid = "b"\nkind = "apple-m3"\n{second}\n'
    )
    return str(path)


def test_defaults_are_always_online_and_never_dropping(tmp_path: Path) -> None:
    device = load_fleet(_fleet(tmp_path)).devices[0]
    assert (device.availability, device.drop_probability, device.offline_rounds) == (1.0, 0.0, frozenset())


def test_probabilities_and_a_trace_relative_to_the_fleet_file(tmp_path: Path) -> None:
    (tmp_path / "seen.csv").write_text("round,device_id,online\n2,a,0\n3,a,1\n\n4,b,0\n5,a,0\n")
    fleet = load_fleet(
        _fleet(tmp_path, 'availability_trace = "seen.csv"', "availability = 0.8\ndrop_probability = 0.1")
    )
    a, b = fleet.devices
    assert a.offline_rounds == {2, 5} and a.availability == 1.0
    assert b.offline_rounds == frozenset() and (b.availability, b.drop_probability) == (0.8, 0.1)
    resized = fleet.resized(4).devices
    assert resized[2].offline_rounds == {2, 5}  # copies follow their device's trace


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ("availability = 1.5", "device.0.availability"),
        ("availability = -0.1", "device.0.availability"),
        ("drop_probability = 2", "device.0.drop_probability"),
        ('availability = 0.5\navailability_trace = "t.csv"', "not both"),
        ('availability_trace = "absent.csv"', "absent.csv does not exist"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path: Path, entry: str, needle: str) -> None:
    with pytest.raises(FleetError, match=needle) as caught:
        load_fleet(_fleet(tmp_path, entry))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        ("round,device_id,online\n1,a\n", "line 2: expected round,device_id,online"),
        ("1,a,1\nx,a,0\n", "line 2: round must be an integer >= 1"),
        ("0,a,0\n", "line 1: round must be an integer >= 1"),
        ("1,a,yes\n", "line 1: online must be 0 or 1"),
        ("1,a,1\n1,zed,0\n", "line 2: device 'zed' is not in the fleet"),
        ("1,a,1\n1,a,0\n", "line 2: round 1 of device 'a' is listed twice"),
        ("\u00b2,a,0\n", "line 1: round must be an integer >= 1"),  # a digit to str.isdigit, not to int()
    ],
)
def test_malformed_traces_name_the_file_and_line(tmp_path: Path, rows: str, needle: str) -> None:
    (tmp_path / "t.csv").write_text(rows)
    with pytest.raises(FleetError, match=needle) as caught:
        load_fleet(_fleet(tmp_path, 'availability_trace = "t.csv"'))
    assert "t.csv" in str(caught.value)


def test_a_trace_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_bytes(b"1,a,\xff\n")
    with pytest.raises(FleetError, match=r"t\.csv is not UTF-8 text \(byte 4\); expected a CSV file"):
        load_fleet(_fleet(tmp_path, 'availability_trace = "t.csv"'))
