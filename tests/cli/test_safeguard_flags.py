"""`fleettune run`'s privacy and security flags: they reach the config, and bad values stop with one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
        (["--attack", "trojan", "--malicious-fraction", "0.2"], "security.attack"),
        (["--membership-samples", "-1"], "privacy.membership_samples"),
        (["--inversion-samples", "-1"], "privacy.inversion_samples"),
        (["--attack", "backdoor", "--malicious-fraction", "0.2", "--set", "security.backdoor_trigger=''"], "trigger"),
        (["--attack", "sign_flip", "--malicious-fraction", "1"], "security.malicious_fraction"),
        (["--activation-clip", "0"], "privacy.activation_clip"),
        (["--activation-clip", "1", "--activation-noise", "-1"], "privacy.activation_noise"),
        (["--activation-noise", "1"], "privacy.activation_clip"),
        (["--dpsgd-clip", "-2"], "privacy.dpsgd_clip"),
        (["--dpsgd-clip", "1", "--dpsgd-noise", "-0.1"], "privacy.dpsgd_noise"),
        (["--dpsgd-noise", "1"], "privacy.dpsgd_clip"),
        (["--secure-aggregation", "--scheme", "sl"], "privacy.secure_aggregation"),
        (["--secure-aggregation", "--aggregator", "krum"], "privacy.secure_aggregation"),
        (["--set", "privacy.secagg_threshold=3"], "privacy.secagg_threshold"),
        (["--activation-clip", "1", "--scheme", "fl"], "privacy.activation_clip"),
        (["--set", "server_optimizer.name=sgd"], "server_optimizer.name"),
        (["--set", "server_optimizer.name=fedadam", "--set", "server_optimizer.tau=0"], "server_optimizer.tau"),
        (["--set", "server_optimizer.name=fedadam", "--scheme", "cpsl"], "server_optimizer applies to aggregation"),
        (["--set", "server_optimizer.lr_schedule=linear"], "server_optimizer.lr_schedule"),
        (["--set", "optimizer=adam"], "optimizer"),
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


def _resolved(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The config `run` would train with, given `argv` (training itself is skipped)."""
    import fleettune.cli.run as cli_run

    seen = {}

    def fake_train(resolved, out):  # type: ignore[no-untyped-def]
        seen["config"] = resolved
        raise SystemExit(0)

    monkeypatch.setattr(cli_run, "train_one", fake_train)
    with pytest.raises(SystemExit):
        main(["run", *argv, "--out", str(tmp_path / "out")])
    return seen["config"]


def test_flags_map_to_dotted_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["--dp-clip", "0.5", "--dp-target-epsilon", "8", "--dp-delta", "1e-6", "--aggregator", "median"]
    argv += ["--attack", "label_flip", "--malicious-fraction", "0.2", "--scheme", "fl"]
    argv += ["--membership-samples", "40", "--inversion-samples", "8"]
    config = _resolved(argv, tmp_path, monkeypatch)
    assert (config.privacy.dp_clip, config.privacy.dp_target_epsilon, config.privacy.dp_delta) == (0.5, 8.0, 1e-6)
    assert (config.security.aggregator, config.security.attack, config.security.malicious_fraction) == (
        "median",
        "label_flip",
        0.2,
    )
    assert (config.privacy.membership_samples, config.privacy.inversion_samples) == (40, 8)


def test_training_mechanism_flags_map_to_dotted_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["--activation-clip", "2", "--activation-noise", "0.5", "--dpsgd-clip", "1", "--dpsgd-noise", "1.1"]
    argv += ["--secure-aggregation", "--set", "privacy.secagg_threshold=4"]
    privacy = _resolved(argv, tmp_path, monkeypatch).privacy
    assert (privacy.activation_clip, privacy.activation_noise, privacy.activation_adjacency) == (2.0, 0.5, "replace")
    assert (privacy.dpsgd_clip, privacy.dpsgd_noise) == (1.0, 1.1)
    assert (privacy.secure_aggregation, privacy.secagg_threshold, privacy.secagg_range) == (True, 4, 8.0)


def test_without_the_flag_the_config_file_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "run.toml"
    config.write_text("[privacy]\nsecure_aggregation = true\n")
    assert _resolved(["--config", str(config)], tmp_path, monkeypatch).privacy.secure_aggregation is True
