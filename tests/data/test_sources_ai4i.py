"""The ``ai4i`` source: machine readings as text, labelled by failure mode, grouped by product type."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from fleettune.data import load_dataset
from fleettune.data.sources.ai4i import failure_label
from fleettune.errors import DataError

Writer = Callable[..., Path]
HEADER = (
    "UDI,Product ID,Type,Air temperature [K],Process temperature [K],Rotational speed [rpm],"
    "Torque [Nm],Tool wear [min],{failure},TWF,HDF,PWF,OSF,RNF"
)


def _machines(tmp_path: Path, write_lines: Writer, failure_column: str = "Machine_failure") -> Path:
    rows = [HEADER.format(failure=failure_column)]
    for i in range(20):
        kind = "LMH"[i % 3]
        flags = "1,1,0,0,1,0" if i % 5 == 0 else "0,0,0,0,0,0"
        rows.append(f"{i + 1},{kind}9{i:04d},{kind},300.{i % 10},310.1,{1400 + i},40.5,{i * 3},{flags}")
    write_lines(tmp_path / "ai4i2020.csv", rows)
    return tmp_path


def test_failure_label_rule() -> None:
    flags = dict.fromkeys(("TWF", "HDF", "PWF", "OSF", "RNF"), "0")
    assert failure_label(flags, "0") == "none"
    assert failure_label(flags, "1") == "unknown-failure"
    assert failure_label(flags | {"OSF": "1", "HDF": "1"}, "1") == "HDF"  # first in TWF, HDF, PWF, OSF, RNF
    assert failure_label(flags | {"RNF": "1"}, "0") == "RNF"  # flags win over the failure column


@pytest.mark.parametrize("failure_column", ["Machine failure", "Machine_failure"])
def test_both_spellings_of_machine_failure_load(tmp_path: Path, write_lines: Writer, failure_column: str) -> None:
    data = load_dataset("ai4i", _machines(tmp_path, write_lines, failure_column))
    assert data.label_names == ["none", "TWF"]
    assert Counter(data.train.labels + data.test.labels) == {0: 16, 1: 4}


def test_text_has_type_and_readings_but_no_ids_or_failure_flags(tmp_path: Path, write_lines: Writer) -> None:
    data = load_dataset("ai4i", _machines(tmp_path, write_lines))
    texts = data.train.texts + data.test.texts
    assert (
        "product type L: air temperature 300.0 K, process temperature 310.1 K, rotational speed 1400 rpm, "
        "torque 40.5 Nm, tool wear 0 min"
    ) in texts
    assert not any("L90000" in text or "TWF" in text or "failure" in text for text in texts)


def test_groups_are_product_types(tmp_path: Path, write_lines: Writer) -> None:
    data = load_dataset("ai4i", _machines(tmp_path, write_lines))
    assert data.train.groups is not None and data.test.groups is not None
    assert Counter(data.train.groups + data.test.groups) == {"L": 7, "M": 7, "H": 6}


def test_missing_csv_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing file .*ai4i2020\.csv; expected ai4i2020\.csv"):
        load_dataset("ai4i", tmp_path)


def test_real_ai4i_has_10000_rows_in_groups_6000_2997_1003(shared_data: Path) -> None:
    data = load_dataset("ai4i", shared_data / "ai4i2020")
    assert data.train.groups is not None and data.test.groups is not None
    assert Counter(data.train.groups + data.test.groups) == {"L": 6000, "M": 2997, "H": 1003}
    labels = Counter(data.label_names[i] for i in data.train.labels + data.test.labels)
    assert labels == {
        "none": 9643,
        "TWF": 46,
        "HDF": 115,
        "PWF": 91,
        "OSF": 78,
        "RNF": 18,
        "unknown-failure": 9,
    }
