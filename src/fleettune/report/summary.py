"""The rich summary table printed at the end of a run."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _rounds(report: dict[str, Any]) -> str:
    ran = len(report["history"])
    stopped = report.get("stopped")  # absent in reports written before runs could stop early
    if stopped == "interrupted":
        return f"{ran} of {report['rounds_planned']} (interrupted)"
    if stopped == "target":
        return f"{ran} of {report['rounds_planned']} (stopped at the target)"
    return str(ran)


def over_capacity_parties(section: dict[str, Any]) -> list[str]:
    """The parties whose peak exceeds their hardware's memory, "server" first, from a report's `memory_bytes` or
    a scheme's entry in comparison.json (both carry `over_capacity`; none for a report from before it was kept)."""
    over = section.get("over_capacity") or {}
    return (["server"] if over.get("server") else []) + list(over.get("clients", []))


def _over_capacity(memory: dict[str, Any]) -> str:
    """Each party above its hardware's memory as "party peak / memory"."""
    over = memory.get("over_capacity") or {}
    parts = [f"server {_mib(memory['server_peak'])} / {_mib(memory['server_capacity'])}"] if over.get("server") else []
    for device in over.get("clients", []):
        parts.append(f"{device} {_mib(memory['clients_peak'][device])} / {_mib(memory['clients_capacity'][device])}")
    return ", ".join(parts)


def summary_table(report: dict[str, Any]) -> Table:
    final = report["final"]
    table = Table(title=f"fleettune {report['scheme']} on {report['dataset']['name']} ({report['model']['name']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("test accuracy", f"{final['accuracy']:.4f}"),
        ("macro-F1", f"{final['macro_f1']:.4f}"),
        ("worst client accuracy", f"{final['worst_client_accuracy']:.4f}"),
        ("client accuracy std", f"{final['client_accuracy_std']:.4f}"),
        ("rounds", _rounds(report)),
        ("virtual time", f"{report['sim_time_s']:.1f} s"),
        ("wall time", f"{report['wall_time_s']:.1f} s"),
        ("server peak memory", _mib(report["memory_bytes"]["server_peak"])),
    ]
    clients = report["memory_bytes"]["clients_peak"]
    if clients:
        rows.append(("largest client peak memory", _mib(max(clients.values()))))
    over = _over_capacity(report["memory_bytes"])
    if over:
        rows.append(("[bold red]peak above the party's memory[/]", over))
    turnout = report.get("participation", {})
    if turnout.get("offline") or turnout.get("dropped", {}).get("total"):
        offline, dropped = turnout["offline"], turnout["dropped"]["total"]
        selected = offline + turnout["client_rounds"]
        rows.append(("client-rounds offline / dropped", f"{offline} / {dropped} of {selected}"))
    comm = report["communication_bytes"]
    rows += [("uplink", _mib(comm["uplink"])), ("downlink", _mib(comm["downlink"]))]
    if report["target_accuracy"] is not None:
        reached = report["time_to_target_s"]
        rows.append((f"time to {report['target_accuracy']}", "not reached" if reached is None else f"{reached:.1f} s"))
    for name, value in rows:
        table.add_row(name, value)
    return table


def print_summary(report: dict[str, Any], console: Console) -> None:
    console.print(summary_table(report))
