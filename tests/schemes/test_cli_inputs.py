"""Bad input on the command line: one line on stderr, exit code 2, and nothing trained or planned first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.invoke import run_cli


def _argv(model: Path, data: Path) -> list[str]:
    return [
        "--model", str(model), "--dataset", "local", "--data-dir", str(data), "--batch-size", "8",
        "--max-length", "16", "--rounds", "1", "--clients", "3",
    ]  # fmt: skip


def _one_error(code: int, err: str) -> str:
    """The error line, checked to be the only thing on stderr (no blank line before it either)."""
    assert code == 2, err
    assert err.endswith("\n") and len(err.splitlines()) == 1, repr(err)
    assert err.startswith("fleettune: error: ")
    return err


def test_an_input_found_bad_while_preparing_prints_only_its_line(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty-data"
    empty.mkdir()
    argv = ["run", *_argv(tiny_model_dir, empty), "--out", str(tmp_path / "out")]
    assert "empty-data" in _one_error(*run_cli(argv, capsys))


def test_run_refuses_an_out_path_that_is_a_file_before_training(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("keep me\n")
    for out in (blocker, blocker / "below"):
        err = _one_error(*run_cli(["run", *_argv(tiny_model_dir, tiny_data_dir), "--out", str(out)], capsys))
        assert f"--out {out}: {blocker} is a file; expected a directory" in err
        assert "round" not in err
    assert blocker.read_text() == "keep me\n"


def test_compare_refuses_an_out_path_that_is_a_file_before_training(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("")
    argv = ["compare", "--schemes", "sl,mesfl", *_argv(tiny_model_dir, tiny_data_dir), "--out", str(blocker)]
    assert "is a file; expected a directory" in _one_error(*run_cli(argv, capsys))


def test_compare_reuse_refuses_a_config_that_is_not_a_json_object(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sl").mkdir()
    (tmp_path / "sl" / "report.json").write_text(json.dumps([1, 2]))
    (tmp_path / "sl" / "config.json").write_text(json.dumps({}))
    argv = ["compare", "--schemes", "sl", *_argv(tiny_model_dir, tiny_data_dir), "--out", str(tmp_path), "--reuse"]
    err = _one_error(*run_cli(argv, capsys))
    assert "--reuse: cannot read the report and config" in err and "JSON list" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xd3\xff\x00rounds = 1\n", "is not UTF-8 text (byte 0); expected a TOML file"),
        (None, "is a directory; expected a TOML file"),
    ],
)
def test_a_config_file_that_is_not_toml_text(
    content: bytes | None, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "my.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    err = _one_error(*run_cli(["run", "--config", str(path), "--out", str(tmp_path / "out")], capsys))
    assert f"config file {path} {message}" in err
    err = _one_error(*run_cli(["schedule", "--fleet", str(path)], capsys))
    assert f"fleet file {path} {message}" in err


def test_a_fleet_file_that_is_not_valid_toml_is_named_a_fleet_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text("[[device]\nkind =")
    assert f"fleet file {path} is not valid TOML" in _one_error(*run_cli(["schedule", "--fleet", str(path)], capsys))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr", "inf"], "lr: Input should be a finite number"),
        (["--set", "epochs=inf"], "epochs: Input should be a finite number"),
        (["--set", "switch_ms=nan"], "switch_ms: Input should be a finite number"),
        (["--seed", "-1"], "seed: Input should be greater than or equal to 0"),
        (["--set", "seed=1180591620717411303424"], "seed: Input should be less than or equal to 4294967295"),
    ],
)
def test_infinite_numbers_and_out_of_range_seeds_are_config_errors(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in _one_error(*run_cli(["run", *flags, "--out", str(tmp_path)], capsys))


def test_an_infinite_latency_in_a_fleet_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text('[[device]]\nkind = "jetson-nano"\nlatency_ms = inf\n')
    err = _one_error(*run_cli(["schedule", "--fleet", str(path)], capsys))
    assert "device.0.latency_ms: Input should be a finite number" in err


def test_plan_refuses_a_scheme_without_cuts_and_a_json_path_that_is_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for scheme in ("nope", "fl"):
        err = _one_error(*run_cli(["plan", "--set", f"scheme={scheme}"], capsys))
        assert f"{scheme}" in err and "scheme" in err
    err = _one_error(*run_cli(["plan", "--json", str(tmp_path)], capsys))
    assert f"--json {tmp_path}: is a directory; expected a file name" in err


def test_no_command_names_what_is_expected(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli([], capsys)
    assert (
        code == 2
        and err == "fleettune: error: expected a command (run, compare, schedule, plan, ...); see the list above\n"
    )


# --- batch shapes no device can hold, and allocations this machine refuses -----------------------------------


@pytest.mark.parametrize("command", ["run", "schedule", "plan"])
def test_a_batch_no_device_can_hold_is_refused_before_anything_is_measured(
    command: str, tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The tiny model's cut tensor at 10**11 x 16 x 32 fp32 (and its gradient) is 381,470 GiB; measuring it
    # would have asked this machine for that much.
    shape = ["--model", str(tiny_model_dir), "--batch-size", "100000000000", "--max-length", "16"]
    largest = "fleet paper6 has (largest: apple-m3, 16.00 GiB)"
    if command == "run":  # three devices of paper6: the Jetsons and a phone
        argv = ["run", *_argv(tiny_model_dir, tiny_data_dir), "--out", str(tmp_path / "out")]
        argv[argv.index("--batch-size") + 1] = "100000000000"
        largest = "fleet paper6x3 has (largest: jetson-tx2-1, 8.00 GiB)"
    else:
        argv = [command, *shape]
    err = _one_error(*run_cli(argv, capsys))
    assert err == (
        "fleettune: error: batch_size 100000000000 x max_length 16: a client's cut tensor and its gradient alone "
        f"need 381,469.73 GiB, more than any device of {largest}; expected a smaller batch_size or max_length\n"
    )
    assert not (tmp_path / "out").exists()


def test_an_allocation_this_machine_refuses_ends_in_one_line_not_a_traceback(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Past the devices' check (a fleet of large devices, a server stage, an `fl` model), torch's own
    refusal to allocate is reported in one line with the size it was asked for."""
    import torch

    import fleettune.cli.schedule as schedule

    def allocate_too_much(*args: object, **kwargs: object) -> object:
        return torch.empty(2**48, dtype=torch.uint8)  # 256 TiB

    monkeypatch.setattr(schedule, "fleet_step_phases", allocate_too_much)
    code, err = run_cli(["schedule", "--model", str(tiny_model_dir), "--max-length", "16"], capsys)
    assert code == 1
    assert err == (
        "fleettune: error: this machine ran out of memory (an allocation of 262,144.00 GiB); "
        "expected a smaller batch_size or max_length, or a machine with more memory\n"
    )
