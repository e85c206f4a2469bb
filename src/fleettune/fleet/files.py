"""Fleet files (TOML): parsing, validation against the catalogue, and the shipped fleets."""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from fleettune.config import read_toml, tomllib
from fleettune.errors import ConfigError, FleetError
from fleettune.fleet.availability import read_trace
from fleettune.fleet.profiles import DEFAULT_SERVER, Device, Hardware, Link, hardware
from fleettune.validation import first_problem


class _MachineEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: str | None = None
    tflops: float | None = Field(None, gt=0)
    memory_gib: float | None = Field(None, gt=0)
    power_w: float | None = Field(None, gt=0)
    efficiency: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _kind_or_numbers(self) -> _MachineEntry:
        if self.kind is None and None in (self.tflops, self.memory_gib, self.power_w):
            raise ValueError("give a catalogue kind, or tflops, memory_gib and power_w")
        return self

    def hardware(self) -> Hardware:
        base = hardware(self.kind) if self.kind else Hardware("custom", 1.0, 1.0, 1.0)
        fields = ("tflops", "memory_gib", "power_w", "efficiency")
        given = {k: getattr(self, k) for k in fields if getattr(self, k) is not None}
        return replace(base, **given)


MIN_MBPS = 1e-6  # one bit a second: slower links only overflow transfer times


class _DeviceEntry(_MachineEntry):
    id: str | None = None  # default: KIND-INDEX (or device-INDEX), INDEX its position in the file
    cut_layer: StrictInt | str = 1  # strict: TOML's `true` is not a layer
    lora_rank: StrictInt | str | None = None
    uplink_mbps: float = Field(100.0, ge=MIN_MBPS)
    downlink_mbps: float = Field(100.0, ge=MIN_MBPS)
    latency_ms: float = Field(5.0, ge=0)
    availability: float = Field(1.0, ge=0, le=1)
    availability_trace: str | None = None
    drop_probability: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _availability(self) -> _DeviceEntry:
        if self.availability_trace is not None and "availability" in self.model_fields_set:
            raise ValueError("give availability or availability_trace, not both")
        return self

    @model_validator(mode="after")
    def _cut(self) -> _DeviceEntry:
        if isinstance(self.cut_layer, str) and self.cut_layer != "auto":
            raise ValueError('cut_layer must be an integer >= 1 or "auto"')
        if isinstance(self.cut_layer, int) and self.cut_layer < 1:
            raise ValueError("cut_layer must be >= 1")
        return self

    @model_validator(mode="after")
    def _rank(self) -> _DeviceEntry:
        if isinstance(self.lora_rank, str) and self.lora_rank != "auto":
            raise ValueError('lora_rank must be an integer >= 1 or "auto"')
        if isinstance(self.lora_rank, int) and self.lora_rank < 1:
            raise ValueError("lora_rank must be >= 1")
        return self


class _FleetFile(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str | None = None  # default: the file's name without .toml
    server: _MachineEntry = Field(default_factory=lambda: _MachineEntry(kind=DEFAULT_SERVER))
    device: list[_DeviceEntry] = Field(min_length=1)


@dataclass(frozen=True)
class Fleet:
    name: str
    server: Hardware
    devices: tuple[Device, ...]

    def resized(self, count: int) -> Fleet:
        """`count` devices cycling through this fleet's devices (ids made unique)."""
        if count == len(self.devices):
            return self
        cycle = (self.devices[i % len(self.devices)] for i in range(count))
        devices = tuple(replace(d, id=f"{d.id}-{i}") for i, d in enumerate(cycle))
        return Fleet(f"{self.name}x{count}", self.server, devices)

    def with_cut(self, cut_layer: int | str) -> Fleet:
        """Every device at `cut_layer` (an integer >= 1, or "auto")."""
        return replace(self, devices=tuple(replace(d, cut_layer=cut_layer) for d in self.devices))


def parse_fleet(tree: dict[str, Any], source: str, base: Path | None = None) -> Fleet:
    """A fleet from a parsed TOML tree; availability traces are read relative to `base` (default: the
    working directory)."""
    try:
        parsed = _FleetFile.model_validate(tree)
    except ValidationError as exc:
        raise FleetError(f"{source}: {first_problem(exc, _FleetFile)}") from None
    ids = [d.id or f"{d.kind or 'device'}-{i}" for i, d in enumerate(parsed.device)]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise FleetError(f"{source}: device ids must be unique; repeated: {', '.join(duplicates)}")
    named = sorted({d.availability_trace for d in parsed.device if d.availability_trace is not None})
    traces = {name: read_trace((base or Path()) / name, ids) for name in named}
    try:
        server = parsed.server.hardware()
        devices = tuple(
            Device(
                id=i,
                hardware=d.hardware(),
                link=Link(d.uplink_mbps, d.downlink_mbps, d.latency_ms),
                cut_layer=d.cut_layer,
                lora_rank=d.lora_rank,
                availability=d.availability,
                drop_probability=d.drop_probability,
                offline_rounds=traces[d.availability_trace].get(i, frozenset())
                if d.availability_trace
                else frozenset(),
            )
            for i, d in zip(ids, parsed.device, strict=True)
        )
    except FleetError as exc:
        raise FleetError(f"{source}: {exc}") from None
    return Fleet(parsed.name or Path(source).name.removesuffix(".toml"), server, devices)


def shipped_fleets() -> list[str]:
    folder = resources.files("fleettune.fleet") / "fleets"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_fleet(name_or_path: str) -> Fleet:
    """A shipped fleet by name, a generated one (`gen:N` or `gen:N:SEED`), or a TOML fleet file."""
    from fleettune.fleet.generate import parse_generated  # local: generate imports this module

    if (generated := parse_generated(name_or_path)) is not None:
        return generated
    if name_or_path in shipped_fleets():
        text = (resources.files("fleettune.fleet") / "fleets" / f"{name_or_path}.toml").read_text()
        return parse_fleet(tomllib.loads(text), name_or_path)
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.exists():
            raise FleetError(f"fleet file {path} does not exist")
        try:
            tree = read_toml(path, "fleet file")
        except ConfigError as exc:
            raise FleetError(str(exc)) from None
        return parse_fleet(tree, str(path), path.parent)
    raise FleetError(f"unknown fleet {name_or_path!r}; expected a TOML file or one of: {', '.join(shipped_fleets())}")
