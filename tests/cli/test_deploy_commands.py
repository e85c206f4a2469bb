"""`fleettune serve`, `join` and `partition`: their bad-input contract (one line, exit code 2), and
`partition` writing each device's share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.invoke import run_cli
from tests.runtime.net.processes import write_config
from tests.schemes.conftest import tiny_data_dir, tiny_flags, tiny_model_dir

__all__ = ["tiny_data_dir", "tiny_model_dir"]  # fixtures


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["serve", "--listen", "0.0.0.0:7800", "--out", "o"], "must authenticate"),
        (["serve", "--listen", "0.0.0.0:7800", "--out", "o", "--tokens", "t.txt"], "needs --tls-cert/--tls-key"),
        (["serve", "--listen", "127.0.0.1:7800", "--out", "o", "--tls-cert", "c.pem"], "give both"),
        (["serve", "--listen", "127.0.0.1:7800", "--out", "o", "--resume"], "--resume needs --checkpoint-dir"),
        (["serve", "--listen", "nowhere", "--out", "o"], "HOST:PORT"),
        (["serve", "--listen", "127.0.0.1:7800", "--out", "o", "--tokens", "missing.txt"], "missing.txt"),
        (["serve", "--listen", "127.0.0.1:0", "--out", "o", "--set", "scheme=central"], "cannot be deployed"),
        (["serve", "--listen", "127.0.0.1:0", "--out", "t.txt"], "--out t.txt: t.txt is a file"),
        (["serve", "--listen", "127.0.0.1:0", "--out", "o", "--min-devices", "0"], "--min-devices: expected"),
        (["join", "--server", "10.0.0.9:7800", "--device-id", "d1", "--data-dir", "."], "needs --tls-ca"),
        (["join", "--server", "127.0.0.1:7800", "--device-id", "d 1", "--data-dir", "."], "device id"),
        (["join", "--server", "127.0.0.1:1", "--device-id", "d1", "--data-dir", "x", "--tls-client-cert", "a"], "both"),
    ],
)
def test_bad_deployment_flags_exit_2_with_one_line(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text("d1 0123456789abcdef0123\n")
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and expected in err and "Traceback" not in err


def test_join_refuses_a_missing_data_dir_before_connecting(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["join", "--server", "127.0.0.1:1", "--device-id", "d1", "--data-dir", str(tmp_path / "nope")]
    code, err = run_cli(argv, capsys)
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_partition_writes_each_devices_share(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tiny_flags(tiny_model_dir, tiny_data_dir, "mesfl", clients=3), tmp_path / "run.toml")
    code, err = run_cli(["partition", "--config", str(config), "--out", str(tmp_path / "devices")], capsys)
    assert code == 0, err
    folders = sorted(p.name for p in (tmp_path / "devices").iterdir())
    assert len(folders) == 3
    rows = [json.loads(line) for f in folders for line in (tmp_path / "devices" / f / "train.jsonl").open()]
    assert len(rows) == 96 and {"text", "label"} <= rows[0].keys()


def test_join_gives_up_once_the_server_stays_unreachable_for_its_retry_time(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    (tmp_path / "train.csv").write_text("text,label\nthe pump hums,ok\nthe valve sticks,fault\n")
    argv = ["join", "--server", "127.0.0.1:1", "--device-id", "d1", "--data-dir", str(tmp_path), "--retry", "0"]
    code, err = run_cli(argv, capsys)
    # No rounds of joining again: --retry is the whole time spent on an unreachable server.
    assert code == 2 and "UNAVAILABLE" in err and len(err.strip().splitlines()) == 1, err
    assert not [r for r in caplog.records if "joining again" in r.getMessage()]
