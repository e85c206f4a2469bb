"""Generated fleets: N devices drawn from the catalogue by a seeded generator, and their `gen:N:SEED` names."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from fleettune.errors import FleetError
from fleettune.fleet.files import Fleet
from fleettune.fleet.profiles import CATALOG, DEFAULT_SERVER, Device, Link, hardware

# Kinds that serve rather than train: never drawn as devices unless asked for by name.
SERVER_KINDS = frozenset({DEFAULT_SERVER})

MAX_DEVICES = 100_000  # far past what one simulated server schedules in reasonable time

Rate = float | tuple[float, float]  # a fixed Mbps, or a (low, high) range drawn uniformly per device

_GENERATED_NAME = re.compile(r"gen:(\d+)(?::(\d+))?")


def device_kinds() -> list[str]:
    """Catalogue kinds a generated fleet draws from by default, sorted so draws do not depend on dict order."""
    return sorted(set(CATALOG) - SERVER_KINDS)


def _rate_bounds(field: str, rate: Rate) -> tuple[float, float]:
    low, high = rate if isinstance(rate, tuple) else (rate, rate)
    if not 0 < low <= high:
        raise FleetError(f"generated fleet: {field} must be > 0 (a range as low <= high), got {rate}")
    return float(low), float(high)


def generate_fleet(
    n: int,
    seed: int,
    kinds: Sequence[str] | None = None,
    server_kind: str = DEFAULT_SERVER,
    uplink_mbps: Rate = 100.0,
    downlink_mbps: Rate = 100.0,
    latency_ms: float = 5.0,
    cut_layer: int | str = 1,
) -> Fleet:
    """`n` devices of kinds drawn uniformly from `kinds` (default: every non-server kind), ids
    "{kind}-{i}"; a range for a link rate draws each device's rate uniformly from it. The same
    arguments give the same fleet.

    Every device starts at `cut_layer`: by default 1, as in a fleet file. Not "auto" (the deepest cut
    that fits): on a drawn mix that puts a Raspberry Pi 4 five MiniLM layers deep, and its step bounds
    everyone's. `fleettune plan` or `plan_cuts` chooses cuts per device."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_DEVICES:
        raise FleetError(
            f"generated fleet: n (the number of devices) must be an integer in 1..{MAX_DEVICES}, got {n!r}"
        )
    pool = list(kinds) if kinds is not None else device_kinds()
    if not pool:
        raise FleetError("generated fleet: kinds must name at least one catalogue kind")
    profiles = [hardware(kind) for kind in pool]  # unknown kinds fail here, with the catalogue listed
    if cut_layer != "auto" and not (isinstance(cut_layer, int) and cut_layer >= 1):
        raise FleetError(f'generated fleet: cut_layer must be an integer >= 1 or "auto", got {cut_layer!r}')
    if latency_ms < 0:
        raise FleetError(f"generated fleet: latency_ms must be >= 0, got {latency_ms}")
    up, down = _rate_bounds("uplink_mbps", uplink_mbps), _rate_bounds("downlink_mbps", downlink_mbps)
    rng = np.random.default_rng(seed)
    # Kinds first, then rates: adding a rate range does not change which kinds a seed draws.
    picks = rng.integers(len(profiles), size=n)
    ups = rng.uniform(*up, size=n)
    downs = rng.uniform(*down, size=n)
    devices = tuple(
        Device(
            id=f"{pool[k]}-{i}",
            hardware=profiles[k],
            link=Link(float(ups[i]), float(downs[i]), latency_ms),
            cut_layer=cut_layer,
        )
        for i, k in enumerate(picks.tolist())
    )
    return Fleet(f"gen:{n}:{seed}", hardware(server_kind), devices)


def parse_generated(name: str) -> Fleet | None:
    """The fleet a name `gen:N` (seed 0) or `gen:N:SEED` stands for; None for any other name."""
    if not name.startswith("gen:"):
        return None
    match = _GENERATED_NAME.fullmatch(name)
    if match is None:
        raise FleetError(f"fleet name {name!r}: expected gen:N or gen:N:SEED with integers N >= 1 and SEED >= 0")
    seed = match.group(2)
    return generate_fleet(int(match.group(1)), int(seed) if seed is not None else 0)
