"""Config layering (defaults < file < flags < --set) and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleettune.config import build_config, parse_value, read_toml
from fleettune.errors import ConfigError


def test_layers_override_in_order(tmp_path: Path) -> None:
    file = tmp_path / "run.toml"
    file.write_text('scheme = "central"\nrounds = 3\nlr = 0.01\n[lora]\nrank = 4\n')
    config = build_config(file, {"rounds": 5, "lr": None}, ["lora.rank=8", "partition=dirichlet:0.3"])
    assert (config.scheme, config.rounds, config.lr, config.lora.rank) == ("central", 5, 0.01, 8)
    assert config.partition == "dirichlet:0.3"


def test_defaults_are_the_embedded_run() -> None:
    config = build_config()
    assert (config.model, config.dataset, config.fleet) == ("minilm", "bbc-news", "paper6")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["nonsense=1"], "nonsense"),
        (["lora.rank=0"], "lora.rank"),
        (["partition=dirichlet"], "partition"),
        (["partition=dirichlet:0"], "partition"),
        (["batch_size=many"], "batch_size"),
        (["rounds=2", "epochs=1"], "rounds or epochs"),
    ],
)
def test_bad_values_name_the_field(overrides: list[str], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        build_config(overrides=overrides)


def test_missing_or_broken_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("scheme = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        build_config(broken)


def test_set_values_parse_like_toml() -> None:
    assert parse_value("3") == 3 and parse_value("1e-3") == 0.001 and parse_value("true") is True
    assert parse_value('["q", "v"]') == ["q", "v"]
    assert parse_value("iid") == "iid"


def test_compression_keys_are_checked_when_the_config_is_built() -> None:
    config = build_config(
        overrides=["compression.activations=int8", "compression.unpad=true", "compression.updates=topk:0.1"]
    )
    assert (config.compression.activations, config.compression.unpad, config.compression.updates) == (
        "int8",
        True,
        "topk:0.1",
    )
    with pytest.raises(ConfigError, match=r"compression\.activations: unknown codec 'int9'; expected .*int8"):
        build_config(overrides=["compression.activations=int9"])
    with pytest.raises(ConfigError, match=r"compression\.gradients: bad codec 'topk:2'"):
        build_config(overrides=["compression.gradients=topk:2"])
    with pytest.raises(ConfigError, match=r"compression\.zip"):
        build_config(overrides=["compression.zip=true"])


def test_privacy_and_security_sections_are_settable() -> None:
    config = build_config(
        overrides=["privacy.dp_noise=1.0", "privacy.dp_clip=0.5", "security.aggregator=krum", "security.byzantine=1"]
    )
    assert (config.privacy.dp_noise, config.privacy.dp_clip, config.privacy.dp_delta) == (1.0, 0.5, 1e-5)
    assert config.privacy.dp_accountant == "rdp" and config.privacy.enabled
    assert (config.security.aggregator, config.security.byzantine, config.security.attack) == ("krum", 1, "none")
    assert build_config().security.default and not build_config().privacy.enabled


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["privacy.dp_noise=-1.0", "privacy.dp_clip=1.0"], r"privacy\.dp_noise: expected a noise multiplier > 0"),
        (["privacy.dp_noise=0", "privacy.dp_clip=1.0"], r"privacy\.dp_noise: expected a noise multiplier > 0"),
        (["privacy.dp_delta=1.0"], r"privacy\.dp_delta: expected delta in \(0, 1\)"),
        (["privacy.dp_clip=0"], r"privacy\.dp_clip: expected an L2 clipping bound > 0"),
        (["privacy.dp_noise=1.0"], r"privacy: differential privacy needs privacy\.dp_clip"),
        (
            ["privacy.dp_noise=1.0", "privacy.dp_target_epsilon=3.0", "privacy.dp_clip=1.0"],
            r"privacy: give privacy\.dp_noise or privacy\.dp_target_epsilon, not both",
        ),
        (["privacy.dp_accountant=gdp"], r"privacy\.dp_accountant"),
        (["security.malicious_fraction=1.0"], r"security\.malicious_fraction: expected a fraction in \[0, 1\)"),
        (["security.aggregator=mean"], r"security\.aggregator: unknown aggregator 'mean'; expected one of: bulyan, "),
        (["security.attack=trojan"], r"security\.attack: unknown attack 'trojan'; expected one of: none, "),
        (["security.attack=backdoor"], r"security: attack backdoor needs security\.malicious_fraction > 0"),
        (["security.backdoor_trigger= "], r"security\.backdoor_trigger: expected a non-empty trigger phrase"),
        (["security.backdoor_fraction=0"], r"security\.backdoor_fraction"),
        (["security.backdoor_target=-1"], r"security\.backdoor_target"),
        (["privacy.membership_samples=-1"], r"privacy\.membership_samples"),
        (["privacy.inversion_samples=-5"], r"privacy\.inversion_samples"),
        (["security.attack=scale"], r"security: attack scale needs security\.malicious_fraction > 0"),
        (["security.byzantine=-1"], r"security\.byzantine"),
    ],
)
def test_bad_privacy_and_security_values_are_one_line_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        build_config(overrides=overrides)
    assert "\n" not in str(caught.value)


def test_unknown_keys_name_what_is_allowed_there() -> None:
    expected = r"alpha, dropout, mixed_ranks, rank, targets$"
    with pytest.raises(
        ConfigError, match=r"^config: lora\.rnk: unknown key \(did you mean 'rank'\?\); expected one of: " + expected
    ):
        build_config(overrides=["lora.rnk=3"])
    with pytest.raises(ConfigError, match=r"^config: colour: unknown key; expected one of: aggregate_every, "):
        build_config(overrides=["colour=3"])


def test_an_unknown_key_is_reported_before_other_errors(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("rounds = 0\n[lora]\nrnak = 4\n")
    with pytest.raises(ConfigError, match=rf"^{path}: lora\.rnak: unknown key \(did you mean 'rank'\?\)"):
        build_config(path)


def test_a_config_file_may_start_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbfrounds = 3\n[lora]\nrank = 4\n")
    assert read_toml(path) == {"rounds": 3, "lora": {"rank": 4}}
