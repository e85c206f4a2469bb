"""PNG plots comparing schemes: memory per party, accuracy over virtual time, one round's timeline."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and devices
import matplotlib.pyplot as plt

from fleettune.runtime.events import Activity

MIB = 2**20
COLORS = {
    "client-forward": "#4c72b0",
    "uplink": "#dd8452",
    "server-queue": "#dddddd",
    "adapter-switch": "#8172b3",
    "server-compute": "#c44e52",
    "downlink": "#55a868",
    "client-backward": "#64b5cd",
    "adapter-uplink": "#937860",
    "adapter-downlink": "#da8bc3",
    "aggregate": "#8c8c8c",
    "secure-aggregation": "#ccb974",
}


def server_capacity_line(reports: dict[str, dict[str, Any]]) -> float | None:
    """The server's memory in MiB, worth a line on the bars when the schemes share one server (one fleet) and
    some scheme's peak comes within half of it; None otherwise (a far line would flatten the bars)."""
    capacities = {r["memory_bytes"].get("server_capacity") for r in reports.values()}
    if len(capacities) != 1 or None in capacities:
        return None
    capacity = float(capacities.pop()) / MIB
    tallest = max(r["memory_bytes"]["server_peak"] for r in reports.values()) / MIB
    return capacity if tallest >= capacity / 2 else None


def memory_bars(reports: dict[str, dict[str, Any]], path: Path) -> Path:
    """Server peak and the largest client peak of each scheme, in MiB (and the server's memory, when it is
    shared and within reach: `server_capacity_line`)."""
    schemes = list(reports)
    server = [reports[s]["memory_bytes"]["server_peak"] / MIB for s in schemes]
    client = [max(reports[s]["memory_bytes"]["clients_peak"].values(), default=0) / MIB for s in schemes]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(schemes))
    ax.bar([x - 0.2 for x in xs], server, width=0.4, label="server peak")
    ax.bar([x + 0.2 for x in xs], client, width=0.4, label="largest client peak")
    capacity = server_capacity_line(reports)
    if capacity is not None:
        ax.axhline(capacity, color="black", linestyle="--", linewidth=1, label=f"server memory ({capacity:,.0f} MiB)")
    ax.set_xticks(list(xs), schemes)
    ax.set_ylabel("MiB")
    ax.set_title("Peak memory per party")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def accuracy_over_time(reports: dict[str, dict[str, Any]], target: float | None, path: Path) -> Path:
    """Test accuracy against virtual time for each scheme, with the target as a line."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for scheme, report in reports.items():
        points = [(h["sim_time_s"], h["accuracy"]) for h in report["history"] if h["accuracy"] is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", label=scheme)
    if target is not None:
        ax.axhline(target, color="black", linestyle="--", linewidth=1, label=f"target {target}")
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy over virtual time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def gantt_row(event: dict[str, Any], parties: Collection[str]) -> str:
    """The row an event is drawn on: its party's, but a job's wait in the server's queue on its device's row."""
    client = event.get("client")
    if event["activity"] == Activity.SERVER_QUEUE.value and client in parties:
        return str(client)
    return str(event["party"])


def round_gantt(timeline: list[dict[str, Any]], round_number: int, title: str, path: Path) -> Path:
    """Who computes and transfers when in one round: one row per party. A job's wait in the server's queue
    is drawn on its device's row (`gantt_row`): on the server's row the waits of queued jobs would overlap,
    and hide, the work the server does meanwhile."""
    events = [e for e in timeline if e["round"] == round_number]
    parties = [*sorted({e["party"] for e in events} - {"server"}), "server"]
    rows = {party: i for i, party in enumerate(parties)}
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(parties) + 1.5))
    seen: set[str] = set()
    for e in events:
        activity = e["activity"]
        label = activity if activity not in seen else None
        seen.add(activity)
        row = gantt_row(e, rows)
        ax.barh(
            rows[row], e["end_s"] - e["start_s"], left=e["start_s"], color=COLORS.get(activity, "#999999"),
            edgecolor="white", label=label,
        )  # fmt: skip
    ax.set_yticks(range(len(parties)), parties)
    ax.invert_yaxis()
    ax.set_xlabel("virtual time (s)")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
