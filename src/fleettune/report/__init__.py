"""Run reports: report.json per CONTRACTS.md and the terminal summary."""

from fleettune.report.json_report import build_report, finished_report, round_to_target, write_report

__all__ = ["build_report", "finished_report", "round_to_target", "write_report"]
