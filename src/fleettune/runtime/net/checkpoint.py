"""The server's checkpoint after every aggregation, written atomically, and resuming from it.

What a resumed server needs to go on as if it had not stopped: the global adapter (and each device's
share to continue from), every device's server-side adapter with its optimizer state, the round and
step counters, the aggregation policy's noise generator, privacy accountant and rule state (FoolsGold's
histories), the stacked updates folded into the base weights so far (flora), and what the report has
gathered so far. Devices are not in it: after a restart each device joins again and receives the global
adapter, so the rounds since the last aggregation are done again and none is applied twice.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from fleettune.aggregation import merge_into
from fleettune.aggregation.policy import AggregationNote
from fleettune.aggregation.ranks import Aggregate
from fleettune.aggregation.secure import SecAggTotals
from fleettune.errors import InputError
from fleettune.models.adapters import task_model
from fleettune.runtime.memory import MemoryBreakdown
from fleettune.runtime.net.coordinator import Coordinator
from fleettune.runtime.progress import RoundRecord

FILE = "server-checkpoint.pt"
FORMAT = 1


def save(c: Coordinator, folder: Path, rounds_done: int) -> Path:
    """Write the checkpoint next to a temporary copy, then rename it over the old one (atomic on POSIX)."""
    folder.mkdir(parents=True, exist_ok=True)
    accountant = c.policy.accountant
    state: dict[str, Any] = {
        "format": FORMAT,
        "scheme": c.prepared.config.scheme,
        "rounds_done": rounds_done,
        "version": c.version,
        "steps_done": c.steps_done,
        "evaluation": c.current.evaluation,
        "continue_from": c.current.continue_from,
        "base_update": c.base_update,
        "server": {} if c.role is None else {client.id: c.role.snapshot(client.id) for client in c.setup.clients},
        "noise_generator": c.policy.generator.get_state(),
        "accountant_steps": accountant.steps if accountant is not None else 0,
        "notes": [asdict(n) for n in c.policy.notes],
        "rule_state": c.policy.rule_state(),
        "server_optimizer": c.policy.optimizer_state(),
        "secure_aggregation": None if c.policy.secure is None else asdict(c.policy.secure.totals),
        "history": [asdict(r) for r in c.history],
        "step_losses": list(c.step_losses),
        "traffic": {"uplink": dict(c.traffic.uplink), "downlink": dict(c.traffic.downlink), "kinds": c.traffic.kinds},
        "energy": {"server": c.energy.server_j, "clients": dict(c.energy.clients_j)},
        "server_memory": asdict(c.server_memory),
        "elapsed_s": c.elapsed_s(),
    }
    path = folder / FILE
    partial = folder / (FILE + ".partial")
    with open(partial, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    return path


def load(c: Coordinator, folder: Path) -> int:
    """Put the coordinator back where the checkpoint in `folder` left it; returns the rounds done."""
    path = folder / FILE
    if not path.is_file():
        raise InputError(f"--resume: no checkpoint {path}; expected one written by an earlier `serve --checkpoint-dir`")
    try:
        state = torch.load(path, weights_only=False)
    except (OSError, RuntimeError, EOFError) as exc:
        raise InputError(f"checkpoint {path} is unreadable ({exc}); expected a fleettune server checkpoint") from None
    if state.get("format") != FORMAT or state.get("scheme") != c.prepared.config.scheme:
        raise InputError(
            f"checkpoint {path} is for scheme {state.get('scheme')!r} (format {state.get('format')}); "
            f"expected scheme {c.prepared.config.scheme!r}, format {FORMAT}"
        )
    c.current = Aggregate(state["evaluation"], state["continue_from"])
    c.version, c.steps_done = state["version"], state["steps_done"]
    for client, snapshot in state["server"].items():
        c.server.restore(client, snapshot)  # (none in fl)
    c.base_update = dict(state.get("base_update", {}))
    if c.base_update:  # the rebuilt server starts from the pre-trained weights: fold what the run had folded
        c.server.merge(c.base_update)
        merge_into(task_model(c.evaluation.peft), c.base_update)
    c.policy.generator.set_state(state["noise_generator"])
    if c.policy.accountant is not None and state["accountant_steps"]:
        c.policy.accountant.step(state["accountant_steps"])
    c.policy.notes[:] = [
        AggregationNote(n["round"], tuple(n["clients"]), None if n["selected"] is None else tuple(n["selected"]))
        for n in state["notes"]
    ]
    c.policy.restore_rule(state.get("rule_state", {}))
    c.policy.restore_optimizer(state.get("server_optimizer", {}))
    if c.policy.secure is not None and state.get("secure_aggregation") is not None:
        c.policy.secure.totals = SecAggTotals(**state["secure_aggregation"])
    c.history[:] = [_record(r) for r in state["history"]]
    c.step_losses[:] = state["step_losses"]
    for client, n in state["traffic"]["uplink"].items():
        c.traffic.uplink[client] = n
    for client, n in state["traffic"]["downlink"].items():
        c.traffic.downlink[client] = n
    c.traffic.kinds.update(state["traffic"]["kinds"])
    c.energy.server_j = state["energy"]["server"]
    c.energy.clients_j.update(state["energy"]["clients"])
    c.server_memory = MemoryBreakdown(**state["server_memory"])
    c.resume_from_s(state["elapsed_s"])
    return int(state["rounds_done"])


def _record(raw: dict[str, Any]) -> RoundRecord:
    tuples = ("participants", "offline", "dropped_deadline", "dropped_disconnect")
    fields: dict[str, Any] = {k: tuple(v) if k in tuples else v for k, v in raw.items()}
    return RoundRecord(**fields)
