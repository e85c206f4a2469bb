"""`fleettune plan`: each device's cut layer (and LoRA rank where asked) for the fewest seconds per round."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fleettune.cli.paths import check_output_dir
from fleettune.compression.specs import parse_update_codec
from fleettune.config import RunConfig, build_config
from fleettune.errors import ConfigError
from fleettune.fleet import Fleet, load_fleet
from fleettune.fleet.feasibility import GIB, check_batch_fits
from fleettune.models.catalog import resolve_model
from fleettune.models.loading import check_max_length, load_model_config, task_models
from fleettune.models.stages import Task
from fleettune.planning import RANK_CANDIDATES, Plan, Turns, plan_for_run
from fleettune.planning.plan import check_rank_candidates
from fleettune.runner import (
    SPLIT_SCHEMES,
    check_config,
    cut_wire,
    local_optimizer,
    lora_spec,
    planned_cadence,
    planned_rank_candidates,
    planned_server,
)
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
    aggregate_every: Annotated[
        int | None,
        Opt("--aggregate-every", help="Rounds between the aggregations planned for (default 1)."),
    ] = None,
    ranks: Annotated[
        str, Opt(help='Candidate ranks for lora_rank = "auto" devices, comma-separated (mesfl, splitfed).')
    ] = DEFAULT_RANKS,
    real_tokens: Annotated[
        int | None, Opt("--real-tokens", help="Real (unpadded) tokens per sequence; default: all.")
    ] = None,
    overrides: Annotated[list[str] | None, Opt("--set", help="key=value config override (repeatable).")] = None,
    json_out: Annotated[Path | None, Opt("--json", help="Write the plan to this JSON file.")] = None,
) -> None:
    """Choose each device's cut for the fewest seconds per round; compare with the best uniform cut."""
    flags = {
        "fleet": fleet,
        "model": model,
        "scheduler": policy,
        "batch_size": batch_size,
        "max_length": max_length,
        "lora.rank": lora_rank,
        "aggregate_every": aggregate_every,
    }
    checked = build_config(flags=flags, overrides=overrides)
    if checked.scheduler not in SCHEDULERS:
        raise ConfigError(f"policy: unknown policy {checked.scheduler!r}; expected one of: {', '.join(SCHEDULERS)}")
    check_config(checked)
    if checked.scheme not in SPLIT_SCHEMES:
        raise ConfigError(
            f"scheme: {checked.scheme} has no cut layers to plan; expected one of {', '.join(SPLIT_SCHEMES)}"
        )
    if json_out is not None:
        if json_out.is_dir():
            raise ConfigError(f"--json {json_out}: is a directory; expected a file name")
        check_output_dir(json_out.parent, "--json")
    candidates = planned_rank_candidates(checked, lora_spec(checked).rank, check_rank_candidates(_parse_ranks(ranks)))
    if real_tokens is not None and not 1 <= real_tokens <= checked.max_length:
        raise ConfigError(f"--real-tokens: expected 1..{checked.max_length} (the max length), got {real_tokens}")
    devices = load_fleet(checked.fleet)
    if checked.clients is not None:
        devices = devices.resized(checked.clients)
    source = resolve_model(checked.model)
    check_max_length(source, checked.max_length)
    check_batch_fits(devices, int(load_model_config(source.path).hidden_size), checked.batch_size, checked.max_length)
    new_model = task_models(source, Task.CLASSIFICATION, NUM_LABELS, checked.seed)
    lora = lora_spec(checked)
    server_policy, switch_s = planned_server(checked)
    planned = plan_for_run(
        devices,
        new_model,
        lora,
        Task.CLASSIFICATION,
        checked.batch_size,
        checked.max_length,
        cut_wire(checked),
        server_policy,
        switch_s,
        candidates,
        real_tokens,
        local_optimizer(checked),
        planned_cadence(checked),
        parse_update_codec(checked.compression.updates),
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
            "scheme": checked.scheme,
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
        console = Console(width=160)
    title = f"{fleet.name} on {model}: batch {config.batch_size} x {config.max_length} tokens"
    table = Table(title=title)
    columns = ["device", "kind", "memory (GiB)", "cut", "rank", "needs (MiB)", "release (ms)", "processing (ms)"]
    columns.append("tail (ms)")
    if result.cadence is not None:
        columns.append("adapter up/down (ms)")
    for column in columns:
        table.add_column(column, justify="left" if column in ("device", "kind") else "right")
    for device in result.devices:
        phases = device.phases
        row = [
            device.device,
            device.kind,
            f"{device.budget_bytes / GIB:.2f}",
            str(device.cut),
            str(device.rank),
            f"{device.memory_bytes / MIB:.1f}",
            f"{phases.release_s * 1e3:.1f}",
            f"{(phases.switch_s + phases.server_s) * 1e3:.1f}",
            f"{phases.tail_s * 1e3:.1f}",
        ]
        if result.cadence is not None:
            row.append(f"{device.option.upload_s * 1e3:.1f} / {device.option.download_s * 1e3:.1f}")
        table.add_row(*row)
    console.print(table)
    console.print(_planned_line(result))
    if result.uniform_cut is None or result.uniform_round_s is None:
        console.print("best uniform cut: none (no cut fits every device)")
    else:
        ratio = result.ratio_to_uniform
        shown = "" if ratio is None else f"; planned / uniform = {ratio:.4f}"
        console.print(f"best uniform cut: {result.uniform_cut}, {result.uniform_round_s * 1e3:.2f} ms a round{shown}")
    if result.written_round_s is not None:
        console.print(f"the fleet file's own cuts: {result.written_round_s * 1e3:.2f} ms a round")
    console.print(
        f"no plan's round, under any policy, is shorter than {result.lower_bound_s * 1e3:.2f} ms (lower bound)"
    )


def _planned_line(result: Plan) -> str:
    cadence = result.cadence
    if isinstance(cadence, Turns):
        clusters = "one device a turn" if cadence.cluster_size == 1 else f"clusters of {cadence.cluster_size} by "
        clusters += "" if cadence.cluster_size == 1 else cadence.cluster_by
        steps = "" if cadence.local_steps == 1 else f", {cadence.local_steps} steps a turn"
        return f"planned round ({result.policy}, {clusters}{steps}): {result.round_s * 1e3:.2f} ms"
    if cadence is None or result.aggregating_s is None:
        return f"planned round ({result.policy}), one step: {result.makespan_s * 1e3:.2f} ms"
    every = "every round" if cadence.aggregate_every == 1 else f"every {cadence.aggregate_every} rounds"
    steps = "" if cadence.local_steps == 1 else f", {cadence.local_steps} steps a round"
    return (
        f"planned round ({result.policy}, adapters averaged {every}{steps}): {result.round_s * 1e3:.2f} ms; "
        f"a plain step {result.makespan_s * 1e3:.2f} ms, the step with the adapters' round trip "
        f"{result.aggregating_s * 1e3:.2f} ms"
    )
