"""Cut-layer and LoRA-rank planning: per-cut costs of a model, and the cuts that give a fleet the shortest step."""

from fleettune.planning.costs import CutCost, CutCosts, price_step, server_job
from fleettune.planning.for_run import PlannedRun, plan_for_run
from fleettune.planning.measured import MeasuredCosts
from fleettune.planning.plan import RANK_CANDIDATES, DevicePlan, Plan, plan_fleet
from fleettune.planning.search import Option, StepScorer, local_search

__all__ = [
    "RANK_CANDIDATES",
    "CutCost",
    "CutCosts",
    "DevicePlan",
    "MeasuredCosts",
    "Option",
    "Plan",
    "PlannedRun",
    "StepScorer",
    "local_search",
    "plan_fleet",
    "plan_for_run",
    "price_step",
    "server_job",
]
