"""What a device reports with each poll: timings the server's scheduler uses must be seconds >= 0."""

from __future__ import annotations

import pytest

from fleettune.errors import InputError
from fleettune.fleet import Device, Link, hardware
from fleettune.runtime.net.board import Member, _note_status


def _member() -> Member:
    return Member("nano", 0, Device("nano", hardware("jetson-nano"), Link()))


def test_tail_and_upload_seconds_are_noted() -> None:
    m = _member()
    _note_status(m, {"busy_s": "2.5", "tail_s": "0.125", "upload_s": "0.5"})
    assert (m.busy_s, m.tail_s, m.upload_s) == (2.5, 0.125, 0.5)
    _note_status(m, {"busy_s": "3.0"})  # an older device: no upload_s, the last value stays
    assert m.upload_s == 0.5


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("tail_s", "nan", "tail_s must be a finite number of seconds >= 0, got 'nan'"),
        ("tail_s", "-1", "tail_s must be a finite number of seconds >= 0, got '-1'"),
        ("upload_s", "inf", "upload_s must be a finite number of seconds >= 0, got 'inf'"),
        ("upload_s", "soon", "could not convert string to float: 'soon'"),
    ],
)
def test_a_malformed_timing_is_an_input_error(field: str, value: str, said: str) -> None:
    m = _member()
    with pytest.raises(InputError) as caught:
        _note_status(m, {field: value})
    assert str(caught.value) == f"device nano: malformed status fields ({said})"
    assert (m.tail_s, m.upload_s) == (0.0, 0.0)
