"""`fleettune schedule`: one training step of a fleet under each server-ordering policy."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fleettune.config import build_config
from fleettune.errors import ConfigError
from fleettune.fleet.feasibility import ClientMemoryModel, check_batch_fits, resolve_fleet_cuts
from fleettune.models.catalog import resolve_model
from fleettune.models.loading import check_max_length, task_models
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import Task
from fleettune.planning.step import fleet_step_phases
from fleettune.runner import fleet_for
from fleettune.scheduling import SCHEDULERS, Job, compare_policies, sharing_schedule

Opt = typer.Option


def schedule(
    fleet: Annotated[str, Opt(help="Shipped fleet name, gen:N[:SEED], or a fleet TOML file.")] = "paper6",
    model: Annotated[str, Opt(help="Catalogue name or model folder.")] = "minilm",
    policy: Annotated[str, Opt(help="fifo, greedy, schrage, optimal or all.")] = "all",
    batch_size: Annotated[int, Opt("--batch-size")] = 16,
    max_length: Annotated[int, Opt("--max-length", help="Tokens per sequence (a full, unpadded batch).")] = 128,
    lora_rank: Annotated[int, Opt("--lora-rank")] = 16,
    cut_layer: Annotated[int | None, Opt("--cut-layer", help="One cut layer for every device.")] = None,
) -> None:
    """Print one step's makespan under each policy, the preemptive lower bound, and ratios to optimal."""
    flags = {"fleet": fleet, "batch_size": batch_size, "max_length": max_length, "lora.rank": lora_rank}
    checked = build_config(flags={**flags, "cut_layer": cut_layer})
    policies = SCHEDULERS.names() if policy == "all" else [policy]
    for name in policies:
        if name not in SCHEDULERS:
            raise ConfigError(f"policy: unknown policy {name!r}; expected all or one of: {', '.join(SCHEDULERS)}")
    source = resolve_model(model)
    check_max_length(source, max_length)
    new_model = task_models(source, Task.CLASSIFICATION, num_labels=2)
    lora = LoraSpec(rank=checked.lora.rank)
    probe = new_model().config
    fleet_of_run = fleet_for(checked)
    check_batch_fits(fleet_of_run, int(probe.hidden_size), batch_size, max_length)
    memory = ClientMemoryModel(new_model, lora, Task.CLASSIFICATION)
    devices = resolve_fleet_cuts(fleet_of_run, int(probe.num_hidden_layers), memory.of_cut(batch_size, max_length))
    phases = fleet_step_phases(devices, new_model, lora, Task.CLASSIFICATION, batch_size, max_length)
    jobs = [Job(p.client, p.release_s, p.switch_s + p.server_s, p.tail_s) for p in phases]
    makespans = compare_policies(jobs)
    optimal = makespans["optimal"]
    # SplitFed-V1's server copies share the server instead (no adapter switch): for comparison.
    copies = [Job(p.client, p.release_s, p.server_s, p.tail_s) for p in phases]
    sharing = sharing_schedule(copies).makespan_s
    console = Console()
    devices_table = Table(title=f"{devices.name} on {source.name}: one step, batch {batch_size} x {max_length} tokens")
    for column in ("device", "cut", "release r (ms)", "server p (ms)", "tail q (ms)"):
        devices_table.add_column(column, justify="right" if column != "device" else "left")
    for device, job in zip(devices.devices, jobs, strict=True):
        devices_table.add_row(
            device.id,
            str(device.cut_layer),
            f"{job.release_s * 1e3:.1f}",
            f"{job.processing_s * 1e3:.1f}",
            f"{job.tail_s * 1e3:.1f}",
        )
    console.print(devices_table)
    table = Table(
        title="server order",
        caption="The policies and the bound count each adapter switch; SplitFed's copies have none to switch, "
        "so where the server is rarely busy their row can end a little below the bound.",
    )
    for column in ("policy", "makespan (ms)", "ratio to optimal"):
        table.add_column(column, justify="right" if column != "policy" else "left")
    for name in policies:
        table.add_row(name, f"{makespans[name] * 1e3:.2f}", f"{makespans[name] / optimal:.4f}")
    table.add_row("preemptive bound", f"{makespans['bound'] * 1e3:.2f}", f"{makespans['bound'] / optimal:.4f}")
    table.add_row("splitfed copies (sharing)", f"{sharing * 1e3:.2f}", f"{sharing / optimal:.4f}")
    console.print(table)
