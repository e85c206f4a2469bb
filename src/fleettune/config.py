"""The one validated run configuration: defaults < TOML file < CLI flags < --set overrides."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from fleettune.aggregation.robust import AGGREGATORS
from fleettune.aggregation.server_opt import SERVER_OPTIMIZERS
from fleettune.compression import parse_cut_codec, parse_update_codec
from fleettune.errors import ConfigError
from fleettune.security.attacks import ATTACKS
from fleettune.security.backdoor import DEFAULT_TRIGGER
from fleettune.validation import first_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_PARTITION = re.compile(r"^(iid|natural|(dirichlet|quantity):(\d+(\.\d*)?|\.\d+))$")


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    rank: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    targets: list[str] | None = None
    # How adapters of different ranks (fleet files' per-device lora_rank) are aggregated: HetLoRA-style
    # zero padding, or FLoRA-style stacking folded into the base weights.
    mixed_ranks: Literal["hetlora", "flora"] = "hetlora"


def _codec_spec(key: str, spec: str, parse: Callable[[str, str], object]) -> str:
    try:
        parse(spec, key)
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix(f"{key}: ")) from None
    return spec


class CompressionSettings(BaseModel):
    """Codecs of what crosses the network: cut tensors each way (and unpadding), aggregation updates."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    activations: str = "fp32"
    gradients: str = "fp32"
    unpad: bool = False
    updates: str = "fp32"

    @field_validator("activations", "gradients")
    @classmethod
    def _cut_codec(cls, value: str, info: ValidationInfo) -> str:
        return _codec_spec(f"compression.{info.field_name}", value, parse_cut_codec)

    @field_validator("updates")
    @classmethod
    def _update_codec(cls, value: str) -> str:
        return _codec_spec("compression.updates", value, parse_update_codec)


class PrivacySettings(BaseModel):
    """Client-level differential privacy of aggregation (DP-FedAvg): clip every update, noise the aggregate.

    Clipping without noise (only `dp_clip`) bounds each client's influence but gives no privacy guarantee.
    The `activation_*` settings protect what devices send across the cut, the `dpsgd_*` ones train each device's
    own parameters with DP-SGD, `secure_aggregation` hides single adapters from the server (docs/privacy.md).
    The `*_samples` settings run leakage attacks on the final model after training (0: off)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dp_noise: float | None = None  # the noise multiplier sigma (noise std = sigma * dp_clip on the sum)
    dp_clip: float | None = None  # the L2 bound C of each client's update
    dp_target_epsilon: float | None = None  # calibrate sigma before training so the run spends at most this
    dp_delta: float = 1e-5
    dp_accountant: Literal["rdp", "prv"] = "rdp"
    membership_samples: int = Field(0, ge=0)  # members (and as many non-members) of the loss-threshold attack
    inversion_samples: int = Field(0, ge=0)  # victim texts whose cut activations the server tries to invert
    activation_clip: float | None = None  # per-sample L2 bound of the cut activations a device sends
    activation_noise: float = 0.0  # their noise multiplier sigma: std sigma x activation_clip per coordinate
    activation_adjacency: Literal["replace", "zero_out"] = "replace"  # what neighbouring releases differ by
    dpsgd_clip: float | None = None  # per-sample L2 bound of the gradient of a device's own parameters
    dpsgd_noise: float = 0.0  # DP-SGD's noise multiplier: std sigma x dpsgd_clip on a batch's sum
    secure_aggregation: bool = False  # FedAvg's sum of the device-held adapters through secure aggregation
    secagg_threshold: int | None = Field(None, ge=2)  # masked inputs that open the sum; None: a strict majority
    secagg_range: float = 8.0  # weighted adapter values are clipped to +-this before fixed-point encoding

    @field_validator("dp_noise")
    @classmethod
    def _noise(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError("expected a noise multiplier > 0 (leave it unset for no noise)")
        return value

    @field_validator("dp_clip", "activation_clip", "dpsgd_clip")
    @classmethod
    def _clip(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError("expected an L2 clipping bound > 0")
        return value

    @field_validator("activation_noise", "dpsgd_noise")
    @classmethod
    def _device_noise(cls, value: float) -> float:
        if not (math.isfinite(value) and value >= 0):
            raise ValueError("expected a noise multiplier >= 0 (0: clipping only)")
        return value

    @field_validator("secagg_range")
    @classmethod
    def _range(cls, value: float) -> float:
        if not (math.isfinite(value) and value > 0):
            raise ValueError("expected a positive bound of the weighted adapter values")
        return value

    @field_validator("dp_target_epsilon")
    @classmethod
    def _target(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError("expected a privacy budget epsilon > 0")
        return value

    @field_validator("dp_delta")
    @classmethod
    def _delta(cls, value: float) -> float:
        if not 0 < value < 1:
            raise ValueError("expected delta in (0, 1)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PrivacySettings:
        if self.dp_noise is not None and self.dp_target_epsilon is not None:
            raise ValueError("give privacy.dp_noise or privacy.dp_target_epsilon, not both")
        if (self.dp_noise is not None or self.dp_target_epsilon is not None) and self.dp_clip is None:
            raise ValueError("differential privacy needs privacy.dp_clip (the update norm bound)")
        for name in ("activation", "dpsgd"):
            if getattr(self, f"{name}_noise") > 0 and getattr(self, f"{name}_clip") is None:
                raise ValueError(f"privacy.{name}_noise needs privacy.{name}_clip (the per-sample bound)")
        if self.secagg_threshold is not None and not self.secure_aggregation:
            raise ValueError("privacy.secagg_threshold applies only with privacy.secure_aggregation = true")
        return self

    @property
    def enabled(self) -> bool:
        """True when updates are clipped (with or without noise)."""
        return self.dp_clip is not None


class SecuritySettings(BaseModel):
    """The robust aggregation rule and the simulated attack (malicious clients chosen from the seed)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    aggregator: str = "fedavg"
    byzantine: int = Field(0, ge=0)  # f: attackers Krum, Multi-Krum and Bulyan assume
    trim: float = Field(0.1, ge=0, lt=0.5)  # fraction trimmed_mean drops on each side
    flame_noise: float = Field(0.001, ge=0, allow_inf_nan=False)  # flame's lambda: noise std / median update norm
    attack: str = "none"
    attack_scale: float = 10.0  # the factor `scale` multiplies malicious updates by
    malicious_fraction: float = 0.0  # ceil(fraction x clients) clients attack
    backdoor_trigger: str = DEFAULT_TRIGGER  # the phrase `backdoor` puts in front of poisoned texts
    backdoor_fraction: float = Field(0.5, gt=0, le=1)  # of each malicious client's texts that get the trigger
    backdoor_target: int = Field(0, ge=0)  # the label poisoned texts get (checked against the data's labels)

    @field_validator("attack")
    @classmethod
    def _attack(cls, value: str) -> str:
        if value not in ATTACKS:
            raise ValueError(f"unknown attack {value!r}; expected one of: {', '.join(ATTACKS)}")
        return value

    @field_validator("backdoor_trigger")
    @classmethod
    def _trigger(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("expected a non-empty trigger phrase")
        return value.strip()

    @field_validator("aggregator")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in AGGREGATORS:
            raise ValueError(f"unknown aggregator {value!r}; expected one of: {', '.join(AGGREGATORS)}")
        return value

    @field_validator("malicious_fraction")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError("expected a fraction in [0, 1)")
        return value

    @field_validator("attack_scale")
    @classmethod
    def _scale(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("expected a finite factor")
        return value

    @model_validator(mode="after")
    def _attackers(self) -> SecuritySettings:
        if self.attack != "none" and self.malicious_fraction == 0:
            raise ValueError(f"attack {self.attack} needs security.malicious_fraction > 0")
        return self

    @property
    def default(self) -> bool:
        """True when aggregation is plain FedAvg and nobody attacks."""
        return self.aggregator == "fedavg" and self.attack == "none"


class ServerOptimizerSettings(BaseModel):
    """How the server applies each aggregation's mean update (`fleettune.aggregation.server_opt`): `none` is
    FedAvg (the mean replaces the global adapter)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = "none"
    lr: float | None = Field(None, gt=0, allow_inf_nan=False)  # None: 1 for fedavgm, the run's lr for the adaptive
    momentum: float = Field(0.9, ge=0, lt=1)  # fedavgm
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-6, gt=0, allow_inf_nan=False)
    bias_correction: bool = False  # the adaptive ones: Adam's correction of m and v for their zero start
    lr_schedule: Literal["constant", "onecycle"] = "constant"  # over the run's aggregations

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value != "none" and value not in SERVER_OPTIMIZERS:
            known = ", ".join(["none", *SERVER_OPTIMIZERS.names()])
            raise ValueError(f"unknown server optimizer {value!r}; expected one of: {known}")
        return value


class RunConfig(BaseModel):
    """Everything a run needs; unknown keys and bad values are errors naming the field."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    scheme: str = "mesfl"
    model: str = "minilm"
    task: Literal["classification"] = "classification"
    dataset: str = "bbc-news"
    data_dir: Path | None = None
    text_column: str = "text"
    label_column: str = "label"
    fleet: str = "paper6"
    cut_layer: int | None = Field(None, ge=1)  # overrides every device's cut when given
    plan_cuts: bool = False  # plan every device's cut (and "auto" ranks) as `fleettune plan` does, then train
    availability: float | None = Field(None, ge=0, le=1)  # overrides every device's availability (and trace)
    drop_probability: float | None = Field(None, ge=0, le=1)  # overrides every device's drop probability
    deadline_s: float | None = Field(None, gt=0)  # round deadline in virtual seconds; None: no deadline
    clients: int | None = Field(None, ge=1)
    client_fraction: float = Field(1.0, gt=0, le=1)
    # fl: which clients a round samples. fixed: round(client_fraction * clients) of them; poisson: each with
    # probability client_fraction, as the DP accountant assumes; auto: poisson when privacy.dp_clip is set and
    # client_fraction < 1, else fixed.
    client_sampling: Literal["auto", "fixed", "poisson"] = "auto"
    partition: str = "iid"
    rounds: int | None = Field(None, ge=1)
    epochs: float | None = Field(None, gt=0)
    local_steps: int | None = Field(None, ge=1)  # None: 10 for fl, 1 for the split schemes
    local_epochs: float | None = Field(None, gt=0)
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"  # every party's local optimizer (fleettune.training)
    weight_decay: float = Field(0.01, ge=0)  # AdamW's usual default
    lr_schedule: Literal["constant", "onecycle"] = "onecycle"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    compression: CompressionSettings = Field(default_factory=CompressionSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    server_optimizer: ServerOptimizerSettings = Field(default_factory=ServerOptimizerSettings)
    max_length: int = Field(128, ge=2)
    padding: Literal["longest", "max_length"] = "longest"  # max_length: fixed-size batches and cut tensors
    aggregate_every: int = Field(1, ge=1)
    scheduler: str = "schrage"
    cluster_size: int = Field(3, ge=1)
    cluster_by: Literal["speed", "cut"] = "speed"  # cpsl: clusters of similar speed, or of clients sharing a cut
    switch_ms: float | None = Field(None, ge=0)  # mesfl adapter switch cost; None: measured at start
    target_accuracy: float | None = Field(None, gt=0, le=1)
    stop_at_target: bool = False
    max_train_samples: int | None = Field(None, ge=1)
    max_eval_samples: int | None = Field(None, ge=1)
    eval_every: int = Field(1, ge=1)
    seed: int = Field(0, ge=0, le=2**32 - 1)

    @field_validator("partition")
    @classmethod
    def _partition_form(cls, value: str) -> str:
        if not _PARTITION.match(value):
            raise ValueError("expected iid, natural, dirichlet:ALPHA or quantity:ALPHA")
        if ":" in value and float(value.split(":")[1]) <= 0:
            raise ValueError("ALPHA must be > 0")
        return value

    @model_validator(mode="after")
    def _rounds_or_epochs(self) -> RunConfig:
        if self.rounds is not None and self.epochs is not None:
            raise ValueError("give rounds or epochs, not both")
        return self


def parse_value(text: str) -> Any:
    """A --set value as TOML would read it (numbers, booleans, lists), else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def read_toml(path: Path, what: str = "config file") -> dict[str, Any]:
    """The parsed TOML file at `path`; `what` names it in errors ("config file", "fleet file")."""
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory; expected a TOML file")
    try:
        # A byte-order mark, as some editors write, is not TOML: it is dropped before parsing.
        return tomllib.loads(path.read_bytes().decode("utf-8").removeprefix("\ufeff"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read ({exc.strerror}); expected a readable TOML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start}); expected a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None


def build_config(
    file: Path | None = None, flags: dict[str, Any] | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """Merge the layers and validate once. `flags` holds only options the user gave."""
    tree: dict[str, Any] = read_toml(file) if file is not None else {}
    for key, value in (flags or {}).items():
        if value is not None:
            _set_path(tree, key, value)
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        _set_path(tree, key.strip(), parse_value(text.strip()))
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(f"{file or 'config'}: {first_problem(exc, RunConfig)}") from None


def resolved_dict(config: RunConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")
