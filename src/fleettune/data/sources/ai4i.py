"""AI4I 2020 predictive maintenance: ``ai4i2020.csv`` rows rendered as text, labelled by failure mode."""

from __future__ import annotations

from pathlib import Path

from fleettune.data.labels import vocabulary
from fleettune.data.sampling import hold_out
from fleettune.data.sources.registry import SOURCES, require_dir, require_file
from fleettune.data.sources.text_files import read_table
from fleettune.data.types import Split, TextDataset
from fleettune.errors import DataError

FILE = "ai4i2020.csv"
EXPECTED = f"{FILE} (the AI4I 2020 predictive maintenance data)"
# Failure-mode flags in label priority order: a row with several flags takes the first.
MODES = ("TWF", "HDF", "PWF", "OSF", "RNF")
# A failed machine with no mode flag (9 rows of the published data) is its own class rather than
# "none": calling a failure healthy would teach the model the opposite of the truth.
UNKNOWN_FAILURE = "unknown-failure"
LABELS = ("none", *MODES, UNKNOWN_FAILURE)
# (column, words in the text, unit); the failure columns, UDI and Product ID never reach the text.
READINGS = (
    ("Air temperature [K]", "air temperature", "K"),
    ("Process temperature [K]", "process temperature", "K"),
    ("Rotational speed [rpm]", "rotational speed", "rpm"),
    ("Torque [Nm]", "torque", "Nm"),
    ("Tool wear [min]", "tool wear", "min"),
)


def failure_label(flags: dict[str, str], machine_failure: str) -> str:
    """The first set mode flag in MODES order, whatever ``Machine failure`` says; else none/unknown.

    Flags win over the failure column because 18 published rows set RNF with ``Machine failure`` 0,
    and RNF would otherwise vanish as a class.
    """
    for mode in MODES:
        if flags[mode] == "1":
            return mode
    return UNKNOWN_FAILURE if machine_failure == "1" else "none"


@SOURCES.register("ai4i")
def load_ai4i(
    data_dir: Path | None, *, text_column: str = "text", label_column: str = "label", seed: int = 0
) -> TextDataset:
    """Label = failure mode (see ``failure_label``); group = product type L/M/H; 20% held out.

    The column arguments do not apply: the rendered text and the failure-mode label are fixed.
    """
    path = require_file(require_dir(data_dir, "ai4i", EXPECTED) / FILE, EXPECTED)
    table = read_table(path)
    type_at = table.column("Type")
    reading_at = [table.column(column) for column, _, _ in READINGS]
    mode_at = {mode: table.column(mode) for mode in MODES}
    # The published file says "Machine failure"; some copies write "Machine_failure".
    failure_at = table.column("Machine failure", "Machine_failure")
    texts: list[str] = []
    raw_labels: list[str] = []
    groups: list[str] = []
    for row, line in zip(table.rows, table.lines, strict=True):
        if not row[type_at]:
            raise DataError(f"{path} line {line}: empty value in column 'Type'")
        readings = ", ".join(
            f"{words} {row[at]} {unit}" for (_, words, unit), at in zip(READINGS, reading_at, strict=True)
        )
        texts.append(f"product type {row[type_at]}: {readings}")
        raw_labels.append(failure_label({mode: row[at] for mode, at in mode_at.items()}, row[failure_at]))
        groups.append(row[type_at])
    labels = vocabulary(raw_labels, LABELS)
    everything = Split(texts, labels.encode(raw_labels, path, table.lines), groups)
    train, test = hold_out(everything, seed)
    return TextDataset("ai4i", labels.names, train, test)
