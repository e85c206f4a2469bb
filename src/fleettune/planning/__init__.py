"""Cut-layer and LoRA-rank planning: per-cut costs of a model, and the cuts that give a fleet the shortest rounds."""

from fleettune.planning.costs import CutCost, CutCosts, Option, price_option, price_step, server_job
from fleettune.planning.for_run import PlannedRun, plan_for_run
from fleettune.planning.measured import MeasuredCosts
from fleettune.planning.plan import RANK_CANDIDATES, DevicePlan, Plan, plan_fleet
from fleettune.planning.rounds import Cadence, Rounds, RoundTime, Turns, round_time
from fleettune.planning.search import PlanScorer, local_search

__all__ = [
    "RANK_CANDIDATES",
    "Cadence",
    "CutCost",
    "CutCosts",
    "DevicePlan",
    "MeasuredCosts",
    "Option",
    "Plan",
    "PlanScorer",
    "PlannedRun",
    "RoundTime",
    "Rounds",
    "Turns",
    "local_search",
    "plan_fleet",
    "plan_for_run",
    "price_option",
    "price_step",
    "round_time",
    "server_job",
]
