"""`fleettune plan`: each device's cut layer (and LoRA rank where asked) for the shortest training step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fleettune.config import RunConfig, build_config
from fleettune.errors import ConfigError
from fleettune.fleet import Fleet, load_fleet
from fleettune.fleet.feasibility import GIB
from fleettune.models.catalog import resolve_model
from fleettune.models.loading import task_models
from fleettune.models.stages import Task
from fleettune.planning import RANK_CANDIDATES, Plan, plan_for_run
from fleettune.planning.plan import check_rank_candidates
from fleettune.runner import cut_wire, local_optimizer, lora_spec
from fleettune.scheduling import SCHEDULERS

Opt = typer.Option
MIB = 2**20
DEFAULT_RANKS = ",".join(str(rank) for rank in RANK_CANDIDATES)
NUM_LABELS = 2  # the head's size hardly moves a step's cost; planning needs no data set


def plan(
    fleet: Annotated[
        str | None, Opt(help="Shipped fleet name, gen:N[:SEED], or a fleet TOML file (default paper6).")
    ] = None,
    model: Annotated[str | None, Opt(help="Catalogue name or model folder (default minilm).")] = None,
    policy: Annotated[str | None, Opt(help="Server order: fifo, greedy, schrage (default) or optimal.")] = None,
    batch_size: Annotated[int | None, Opt("--batch-size", help="Default 16.")] = None,
    max_length: Annotated[int | None, Opt("--max-length", help="Tokens per sequence (default 128).")] = None,
    lora_rank: Annotated[
        int | None, Opt("--lora-rank", help="The run's rank, for devices without their own (default 16).")
    ] = None,
    ranks: Annotated[str, Opt(help='Candidate ranks for lora_rank = "auto" devices, comma-separated.')] = DEFAULT_RANKS,
    real_tokens: Annotated[
        int | None, Opt("--real-tokens", help="Real (unpadded) tokens per sequence; default: all.")
    ] = None,
    overrides: Annotated[list[str] | None, Opt("--set", help="key=value config override (repeatable).")] = None,
    json_out: Annotated[Path | None, Opt("--json", help="Write the plan to this JSON file.")] = None,
) -> None:
    """Choose each device's cut to minimise one training step's makespan; compare with the best uniform cut."""
    flags = {
        "fleet": fleet,
        "model": model,
        "scheduler": policy,
        "batch_size": batch_size,
        "max_length": max_length,
        "lora.rank": lora_rank,
    }
    checked = build_config(flags=flags, overrides=overrides)
    if checked.scheduler not in SCHEDULERS:
        raise ConfigError(f"policy: unknown policy {checked.scheduler!r}; expected one of: {', '.join(SCHEDULERS)}")
    candidates = check_rank_candidates(_parse_ranks(ranks))
    if real_tokens is not None and not 1 <= real_tokens <= checked.max_length:
        raise ConfigError(f"--real-tokens: expected 1..{checked.max_length} (the max length), got {real_tokens}")
    devices = load_fleet(checked.fleet)
    if checked.clients is not None:
        devices = devices.resized(checked.clients)
    source = resolve_model(checked.model)
    new_model = task_models(source, Task.CLASSIFICATION, NUM_LABELS, checked.seed)
    lora = lora_spec(checked)
    switch_s = None if checked.switch_ms is None else checked.switch_ms / 1000
    planned = plan_for_run(
        devices,
        new_model,
        lora,
        Task.CLASSIFICATION,
        checked.batch_size,
        checked.max_length,
        cut_wire(checked),
        checked.scheduler,
        switch_s,
        candidates,
        real_tokens,
        local_optimizer(checked),
    )
    result = planned.plan
    _print(result, devices, source.name, checked)
    if json_out is not None:
        document = {
            "fleet": devices.name,
            "model": source.name,
            "layers": planned.costs.num_layers,
            "batch_size": checked.batch_size,
            "max_length": checked.max_length,
            "real_tokens": real_tokens,
            "lora_rank": lora.rank,
            "rank_candidates": list(candidates),
            "compression": checked.compression.model_dump(mode="json"),
            "switch_s": planned.switch_s,
            **result.to_dict(),
        }
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(document, indent=2) + "\n")
        Console().print(f"plan: {json_out}")


def _parse_ranks(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--ranks: expected comma-separated integers such as 4,8,16,32, got {text!r}") from None


def _print(result: Plan, fleet: Fleet, model: str, config: RunConfig) -> None:
    console = Console()
    if not console.is_terminal:  # logs and pipes: the full table rather than one cut to 80 columns
        console = Console(width=140)
    title = f"{fleet.name} on {model}: one step, batch {config.batch_size} x {config.max_length} tokens"
    table = Table(title=title)
    columns = ("device", "kind", "memory (GiB)", "cut", "rank", "needs (MiB)", "release (ms)", "processing (ms)")
    for column in (*columns, "tail (ms)"):
        table.add_column(column, justify="left" if column in ("device", "kind") else "right")
    for device in result.devices:
        phases = device.phases
        table.add_row(
            device.device,
            device.kind,
            f"{device.budget_bytes / GIB:.2f}",
            str(device.cut),
            str(device.rank),
            f"{device.memory_bytes / MIB:.1f}",
            f"{phases.release_s * 1e3:.1f}",
            f"{(phases.switch_s + phases.server_s) * 1e3:.1f}",
            f"{phases.tail_s * 1e3:.1f}",
        )
    console.print(table)
    console.print(f"planned makespan ({result.policy}): {result.makespan_s * 1e3:.2f} ms")
    if result.uniform_cut is None or result.uniform_makespan_s is None:
        console.print("best uniform cut: none (no cut fits every device)")
    else:
        ratio = result.ratio_to_uniform
        shown = "" if ratio is None else f"; planned / uniform = {ratio:.4f}"
        console.print(
            f"best uniform cut: {result.uniform_cut}, makespan {result.uniform_makespan_s * 1e3:.2f} ms{shown}"
        )
    if result.written_makespan_s is not None:
        console.print(f"the fleet file's own cuts: makespan {result.written_makespan_s * 1e3:.2f} ms")
    console.print(f"no plan's makespan, under any policy, is below {result.lower_bound_s * 1e3:.2f} ms (lower bound)")
