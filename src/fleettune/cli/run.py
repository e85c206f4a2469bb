"""`fleettune run` and `fleettune compare`: training runs with a progress bar, summary and reports."""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fleettune.cli.paths import check_output_dir
from fleettune.config import RunConfig, build_config, resolved_dict
from fleettune.errors import ConfigError, RunInterrupted
from fleettune.report import build_report, finished_report, write_report
from fleettune.report.adapter_file import save_adapter
from fleettune.report.comparison import comparison
from fleettune.report.plots import accuracy_over_time, memory_bars, round_gantt
from fleettune.report.summary import over_capacity_parties, print_summary
from fleettune.runner import check_config, execute, prepare
from fleettune.runtime.progress import RoundRecord
from fleettune.runtime.stop import stop_on_interrupt

Opt = typer.Option


def run(
    ctx: typer.Context,
    out: Annotated[Path, Opt("--out", help="Directory for report.json and the resolved config.")],
    schemes: Annotated[
        str | None, Opt(help="compare: comma-separated schemes to run on identical settings (e.g. sl,mesfl).")
    ] = None,
    config: Annotated[Path | None, Opt("--config", help="A TOML config file.")] = None,
    scheme: Annotated[str | None, Opt(help="central, fl, sl, cpsl, splitfed or mesfl (default).")] = None,
    model: Annotated[str | None, Opt(help="Catalogue name (minilm, mpnet-base, smollm2-135m) or folder.")] = None,
    dataset: Annotated[str | None, Opt(help="carer, bbc-news, ton-iot, ai4i or local.")] = None,
    data_dir: Annotated[Path | None, Opt("--data-dir", help="Directory holding the data set's files.")] = None,
    fleet: Annotated[str | None, Opt(help="Shipped fleet name or a fleet TOML file.")] = None,
    clients: Annotated[int | None, Opt(help="Number of clients (cycles through the fleet's devices).")] = None,
    partition: Annotated[str | None, Opt(help="iid, dirichlet:ALPHA, quantity:ALPHA or natural.")] = None,
    rounds: Annotated[int | None, Opt(help="Training rounds.")] = None,
    epochs: Annotated[float | None, Opt(help="Epochs (instead of rounds).")] = None,
    batch_size: Annotated[int | None, Opt("--batch-size")] = None,
    lr: Annotated[float | None, Opt(help="Learning rate.")] = None,
    lora_rank: Annotated[int | None, Opt("--lora-rank")] = None,
    max_length: Annotated[int | None, Opt("--max-length", help="Truncate sequences to this many tokens.")] = None,
    aggregate_every: Annotated[int | None, Opt("--aggregate-every")] = None,
    scheduler: Annotated[str | None, Opt(help="Server order policy for split schemes.")] = None,
    target_accuracy: Annotated[float | None, Opt("--target-accuracy")] = None,
    max_train_samples: Annotated[int | None, Opt("--max-train-samples")] = None,
    max_eval_samples: Annotated[int | None, Opt("--max-eval-samples")] = None,
    eval_every: Annotated[int | None, Opt("--eval-every")] = None,
    local_steps: Annotated[int | None, Opt("--local-steps", help="Optimizer steps per client per round.")] = None,
    cut_layer: Annotated[int | None, Opt("--cut-layer", help="One cut layer for every device.")] = None,
    seed: Annotated[int | None, Opt()] = None,
    dp_noise: Annotated[float | None, Opt("--dp-noise", help="DP noise multiplier sigma (needs --dp-clip).")] = None,
    dp_clip: Annotated[float | None, Opt("--dp-clip", help="L2 bound of each client's update.")] = None,
    dp_target_epsilon: Annotated[
        float | None, Opt("--dp-target-epsilon", help="Calibrate sigma so the run spends at most this epsilon.")
    ] = None,
    dp_delta: Annotated[float | None, Opt("--dp-delta", help="DP delta (default 1e-5).")] = None,
    aggregator: Annotated[
        str | None, Opt(help="fedavg, normbound, krum, multikrum, median, trimmed_mean, bulyan, flame or foolsgold.")
    ] = None,
    attack: Annotated[str | None, Opt(help="none, label_flip, backdoor, scale or sign_flip (simulated).")] = None,
    malicious_fraction: Annotated[
        float | None, Opt("--malicious-fraction", help="Share of clients that attack (rounded up).")
    ] = None,
    membership_samples: Annotated[
        int | None, Opt("--membership-samples", help="After training: membership inference on N members.")
    ] = None,
    inversion_samples: Annotated[
        int | None, Opt("--inversion-samples", help="After training: invert N texts' cut activations (split).")
    ] = None,
    activation_clip: Annotated[
        float | None, Opt("--activation-clip", help="Per-sample L2 bound of the cut activations (split).")
    ] = None,
    activation_noise: Annotated[
        float | None, Opt("--activation-noise", help="Noise multiplier of the cut activations (needs the clip).")
    ] = None,
    dpsgd_clip: Annotated[float | None, Opt("--dpsgd-clip", help="DP-SGD: per-sample gradient bound.")] = None,
    dpsgd_noise: Annotated[float | None, Opt("--dpsgd-noise", help="DP-SGD noise multiplier (needs the clip).")] = None,
    secure_aggregation: Annotated[
        bool, Opt("--secure-aggregation", help="Sum the device-held adapters through secure aggregation.")
    ] = False,
    overrides: Annotated[list[str] | None, Opt("--set", help="key=value config override (repeatable).")] = None,
    reuse: Annotated[
        bool, Opt("--reuse", help="compare: keep each scheme's finished report in --out made with the same config.")
    ] = False,
) -> None:
    """Train with one scheme and write DIR/report.json. With no options: the embedded default."""
    flags: dict[str, Any] = {
        "scheme": scheme,
        "model": model,
        "dataset": dataset,
        "data_dir": str(data_dir) if data_dir is not None else None,
        "fleet": fleet,
        "clients": clients,
        "partition": partition,
        "rounds": rounds,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "lora.rank": lora_rank,
        "max_length": max_length,
        "aggregate_every": aggregate_every,
        "scheduler": scheduler,
        "target_accuracy": target_accuracy,
        "max_train_samples": max_train_samples,
        "max_eval_samples": max_eval_samples,
        "eval_every": eval_every,
        "local_steps": local_steps,
        "cut_layer": cut_layer,
        "seed": seed,
        "privacy.dp_noise": dp_noise,
        "privacy.dp_clip": dp_clip,
        "privacy.dp_target_epsilon": dp_target_epsilon,
        "privacy.dp_delta": dp_delta,
        "security.aggregator": aggregator,
        "security.attack": attack,
        "security.malicious_fraction": malicious_fraction,
        "privacy.membership_samples": membership_samples,
        "privacy.inversion_samples": inversion_samples,
        "privacy.activation_clip": activation_clip,
        "privacy.activation_noise": activation_noise,
        "privacy.dpsgd_clip": dpsgd_clip,
        "privacy.dpsgd_noise": dpsgd_noise,
        "privacy.secure_aggregation": True if secure_aggregation else None,  # absent: the file's value stands
    }
    if ctx.info_name == "compare":
        names = [n.strip() for n in (schemes or "").split(",") if n.strip()]
        if not names:
            raise ConfigError("--schemes: expected a comma-separated list such as sl,cpsl,splitfed,mesfl")
        compare_schemes(names, config, flags, overrides, out, reuse)
        return
    if schemes is not None:
        raise ConfigError("--schemes belongs to `fleettune compare`; `run` takes --scheme")
    if reuse:
        raise ConfigError("--reuse belongs to `fleettune compare`; a `run` always trains")
    try:
        report = train_one(build_config(config, flags, overrides), out)
    except RunInterrupted as stopped:
        print_summary(stopped.report, Console())  # the rounds it ran; the CLI then exits 130
        raise
    print_summary(report, Console())
    Console().print(f"report: {out / 'report.json'}")


def train_one(resolved: RunConfig, out: Path) -> dict[str, Any]:
    """Prepare (checking every input first), train with a progress bar, write report and config.

    The first Ctrl-C during training ends the run after the round in progress: that round is evaluated, the
    report of the rounds run is written (`"stopped": "interrupted"`) and RunInterrupted is raised. A second
    Ctrl-C abandons the run without a report."""
    console = Console(stderr=True)
    started = time.perf_counter()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    total: list[int] = []  # the planned rounds, known once the run is prepared
    progress = Progress(*columns, console=console, transient=False)
    task = progress.add_task(f"{resolved.scheme} rounds", total=None, status="", visible=False)

    def on_round(record: RoundRecord) -> None:
        accuracy = "" if record.accuracy is None else f" acc {record.accuracy:.4f}"
        loss = "no update" if record.train_loss is None else f"loss {record.train_loss:.4f}"
        progress.update(task, advance=1, status=f"{loss}{accuracy}")
        if record.accuracy is not None and not console.is_terminal:
            # A bar is drawn only on a terminal: logs of batch jobs get a line per evaluation instead.
            console.print(
                f"{resolved.scheme} round {record.round}/{total[0]}: {loss}{accuracy} "
                f"(virtual {record.sim_time_s:.1f} s, wall {record.wall_time_s:.0f} s)",
                highlight=False,
            )

    # Every input (the output folder included) is checked before the bar starts, so a user mistake prints
    # one line only and nothing trains for a report that could not be written.
    check_output_dir(out)
    prepared = prepare(resolved, on_round)
    total.append(prepared.setup.plan.rounds)
    progress.update(task, total=prepared.setup.plan.rounds, visible=True)
    with progress, stop_on_interrupt(prepared.setup.stop, partial(stop_notice, console)):
        result = execute(prepared)
    report = build_report(prepared, result, time.perf_counter() - started)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(resolved_dict(resolved), indent=2) + "\n")
    write_report(report, out)
    if result.adapter is not None:
        save_adapter(result.adapter, out)
    raise_if_interrupted(report, out)
    return report


def stop_notice(console: Console) -> None:
    """What the first Ctrl-C prints."""
    console.print("stopping after the round in progress; press Ctrl-C again to abandon the run", style="yellow")


def raise_if_interrupted(report: dict[str, Any], out: Path) -> None:
    """RunInterrupted when `report` (already written into `out`) is of a run stopped by Ctrl-C."""
    if report["stopped"] == "interrupted":
        raise RunInterrupted(
            f"{report['scheme']} interrupted after round {len(report['history'])} of {report['rounds_planned']}; "
            f"its report is in {out / 'report.json'}",
            report,
        )


def compare_schemes(
    names: list[str],
    config: Path | None,
    flags: dict[str, Any],
    overrides: list[str] | None,
    out: Path,
    reuse: bool = False,
) -> None:
    """Each scheme on the same model, data, partition, fleet and seed; then comparison.json and plots. With
    `reuse`, a scheme whose finished report `out` already holds, made with the same config, is not trained again."""
    configs = {name: build_config(config, {**flags, "scheme": name}, overrides) for name in names}
    for name, resolved in configs.items():  # a config one scheme refuses stops the command before any trains
        check_config(resolved)
        check_output_dir(out / name)
    # Every folder is checked before anything trains: a report of another configuration stops the command first.
    found = {name: finished_report_of(resolved, out / name) for name, resolved in configs.items()} if reuse else {}
    reports: dict[str, dict[str, Any]] = {}
    for name, resolved in configs.items():
        kept = found.get(name)
        if kept is not None:
            Console(stderr=True).print(
                f"{name}: kept the finished report in {out / name}", highlight=False, soft_wrap=True
            )
            reports[name] = kept
            continue
        try:
            reports[name] = train_one(resolved, out / name)
        except RunInterrupted as stopped:
            # The schemes run so far (the interrupted one included) are compared; the rest are not started.
            reports[name] = stopped.report
            _write_comparison(reports, resolved.target_accuracy, out)
            raise
    _write_comparison(reports, next(iter(configs.values())).target_accuracy, out)
    Console().print(comparison_table(comparison(reports)))
    Console().print(f"reports: {out}")


def comparison_table(numbers_of: dict[str, dict[str, Any]]) -> Table:
    """The headline numbers of each scheme; a last column names the parties whose peak exceeded their
    hardware's memory when any did."""
    over = {name: over_capacity_parties(numbers) for name, numbers in numbers_of.items()}
    columns = ["scheme", "accuracy", "virtual time (s)", "time to target (s)", "server peak (MiB)"]
    columns += ["above its memory"] if any(over.values()) else []
    table = Table(title="comparison")
    for column in columns:
        table.add_column(column, justify="right" if column not in ("scheme", "above its memory") else "left")
    for name, numbers in numbers_of.items():
        reached = numbers["time_to_target_s"]
        row = [
            name,
            f"{numbers['accuracy']:.4f}",
            f"{numbers['sim_time_s']:.1f}",
            "-" if reached is None else f"{reached:.1f}",
            f"{numbers['server_peak_bytes'] / 2**20:.1f}",
        ]
        table.add_row(*row, *([", ".join(over[name]) or "-"] if any(over.values()) else []))
    return table


def finished_report_of(resolved: RunConfig, folder: Path) -> dict[str, Any] | None:
    """The report in `folder` when it is of a finished run of `resolved` (None when there is none, or its run was
    interrupted: it is trained again). A report of another configuration is an error: training again would
    overwrite it."""
    if not (folder / "report.json").exists():
        return None
    try:
        report = finished_report(folder / "report.json")
        kept = json.loads((folder / "config.json").read_text())
        if not isinstance(kept, dict):
            raise ValueError(f"config.json holds a JSON {type(kept).__name__}, not a config")
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"--reuse: cannot read the report and config in {folder} ({exc}); remove the folder"
        ) from None
    wanted = json.loads(json.dumps(resolved_dict(resolved)))
    if kept != wanted:
        keys = sorted(k for k in set(kept) | set(wanted) if kept.get(k) != wanted.get(k))
        raise ConfigError(
            f"--reuse: {folder} holds a report of another configuration (differs in {', '.join(keys)}); "
            "use another --out or remove that folder"
        )
    return report


def _write_comparison(reports: dict[str, dict[str, Any]], target: float | None, out: Path) -> None:
    """comparison.json and the plots of the schemes in `reports`."""
    write_report(comparison(reports), out, "comparison.json")
    memory_bars(reports, out / "memory.png")
    accuracy_over_time(reports, target, out / "accuracy_time.png")
    if "mesfl" in reports and reports["mesfl"]["timeline"]:
        round_gantt(reports["mesfl"]["timeline"], 0, "mesfl: one round", out / "mesfl_round.png")
