"""comparison.json: the headline numbers of each scheme's report, side by side."""

from __future__ import annotations

from typing import Any

from fleettune.report.json_report import round_to_target


def headline(report: dict[str, Any]) -> dict[str, Any]:
    memory = report["memory_bytes"]
    return {
        "accuracy": report["final"]["accuracy"],
        "macro_f1": report["final"]["macro_f1"],
        "worst_client_accuracy": report["final"]["worst_client_accuracy"],
        "time_to_target_s": report["time_to_target_s"],
        "round_to_target": round_to_target(report),
        "rounds": len(report["history"]),
        "stopped": report.get("stopped", "planned"),
        "sim_time_s": report["sim_time_s"],
        "wall_time_s": report["wall_time_s"],
        "server_peak_bytes": memory["server_peak"],
        "client_peak_bytes": max(memory["clients_peak"].values(), default=0),
        "over_capacity": memory.get("over_capacity"),  # None for reports from before it was kept
        "uplink_bytes": report["communication_bytes"]["uplink"],
        "downlink_bytes": report["communication_bytes"]["downlink"],
        "energy_j": report["energy_j"]["server"] + sum(report["energy_j"]["clients"].values()),
    }


def comparison(reports: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {scheme: headline(report) for scheme, report in reports.items()}
