"""`fleettune run`'s privacy and security flags: they reach the config, and bad values stop with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleettune.cli.main import main


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--dp-noise", "-1", "--dp-clip", "1"], "privacy.dp_noise"),
        (["--dp-noise", "1"], "privacy.dp_clip"),
        (["--dp-clip", "0"], "privacy.dp_clip"),
        (["--dp-clip", "1", "--dp-delta", "2"], "privacy.dp_delta"),
        (["--dp-clip", "1", "--dp-noise", "1", "--dp-target-epsilon", "3"], "dp_target_epsilon"),
        (["--aggregator", "mean"], "security.aggregator"),
        (["--attack", "backdoor", "--malicious-fraction", "0.2"], "security.attack"),
        (["--attack", "sign_flip", "--malicious-fraction", "1"], "security.malicious_fraction"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["run", *argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert caught.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


def test_flags_map_to_dotted_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fleettune.cli.run as cli_run

    seen = {}

    def fake_train(resolved, out):  # type: ignore[no-untyped-def]
        seen["config"] = resolved
        raise SystemExit(0)

    monkeypatch.setattr(cli_run, "train_one", fake_train)
    argv = ["--dp-clip", "0.5", "--dp-target-epsilon", "8", "--dp-delta", "1e-6", "--aggregator", "median"]
    argv += ["--attack", "label_flip", "--malicious-fraction", "0.2", "--scheme", "fl"]
    with pytest.raises(SystemExit):
        main(["run", *argv, "--out", str(tmp_path)])
    config = seen["config"]
    assert (config.privacy.dp_clip, config.privacy.dp_target_epsilon, config.privacy.dp_delta) == (0.5, 8.0, 1e-6)
    assert (config.security.aggregator, config.security.attack, config.security.malicious_fraction) == (
        "median",
        "label_flip",
        0.2,
    )
