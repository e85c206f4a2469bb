"""The ``ton-iot`` source: device CSVs rendered as text, labelled by attack type, grouped by device."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fleettune.data import TextDataset, load_dataset, partition
from fleettune.data.sources.ton_iot import TYPES
from fleettune.errors import DataError

Writer = Callable[..., Path]


def _devices(tmp_path: Path, write_lines: Writer) -> Path:
    fridge = ["date,time,fridge_temperature,temp_condition,label,type"]
    fridge += [
        f"1-Jan-20, 10:00:{i:02d} ,{3 + i % 4}, low ,{i % 2},{'normal' if i % 2 == 0 else 'ddos'}" for i in range(10)
    ]
    write_lines(tmp_path / "Train_Test_IoT_Fridge.csv", fridge)
    door = ["date,time,door_state,sphone_signal,label,type"]
    attack = ["normal"] * 5 + ["xss"] * 5
    door += [f"1-Jan-20,9:00:{i:02d},{'open' if i % 3 else 'closed'},1,{int(i >= 5)},{attack[i]}" for i in range(10)]
    write_lines(tmp_path / "Train_Test_IoT_Garage_Door.csv", door)
    return tmp_path


def test_rows_render_device_and_readings_without_time_or_answer(tmp_path: Path, write_lines: Writer) -> None:
    data = load_dataset("ton-iot", _devices(tmp_path, write_lines))
    texts = data.train.texts + data.test.texts
    assert "fridge: fridge_temperature=3 temp_condition=low" in texts
    assert "garage_door: door_state=closed sphone_signal=1" in texts
    assert not any("10:00" in text or "Jan" in text or "label" in text or "type" in text for text in texts)


def test_labels_are_attack_types_in_paper_order_and_groups_are_device_kinds(
    tmp_path: Path, write_lines: Writer
) -> None:
    data = load_dataset("ton-iot", _devices(tmp_path, write_lines))
    assert data.label_names == ["normal", "ddos", "xss"]
    assert data.train.groups is not None and data.test.groups is not None
    assert set(data.train.groups) == set(data.test.groups) == {"fridge", "garage_door"}
    for text, group in zip(data.train.texts, data.train.groups, strict=True):
        assert text.startswith(f"{group}: ")


def test_missing_type_column_names_file_and_columns(tmp_path: Path, write_lines: Writer) -> None:
    write_lines(tmp_path / "Train_Test_IoT_Modbus.csv", ["date,time,FC1,label", "a,b,1,0"])
    with pytest.raises(DataError, match=r"Train_Test_IoT_Modbus\.csv: no column 'type'; columns found: date"):
        load_dataset("ton-iot", tmp_path)


def test_folder_without_device_files_says_what_it_expects(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"has no Train_Test_IoT_\*\.csv"):
        load_dataset("ton-iot", tmp_path)


@pytest.fixture(scope="module")
def real(shared_data: Path) -> TextDataset:
    return load_dataset("ton-iot", shared_data / "ton_iot")


def test_real_ton_iot_has_seven_devices_and_eight_types(real: TextDataset) -> None:
    data = real
    assert data.train.groups is not None
    assert set(data.train.groups) == {
        "fridge",
        "gps_tracker",
        "garage_door",
        "modbus",
        "motion_light",
        "thermostat",
        "weather",
    }
    assert data.label_names == list(TYPES)
    assert set(data.test.labels) == set(range(8))


def test_real_ton_iot_natural_partition_gives_each_of_seven_clients_one_device(real: TextDataset) -> None:
    assert real.train.groups is not None
    parts = partition("natural", real.train.labels, real.train.groups, 7, seed=0)
    assert [{real.train.groups[i] for i in part} for part in parts] == [
        {"fridge"},
        {"garage_door"},
        {"gps_tracker"},
        {"modbus"},
        {"motion_light"},
        {"thermostat"},
        {"weather"},
    ]
