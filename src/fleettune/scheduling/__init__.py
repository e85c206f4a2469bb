"""Ordering clients on one edge server per training step (1|r_j,q_j|Cmax): policies, exact optimum, bounds."""

from fleettune.scheduling.bounds import preemptive_bound
from fleettune.scheduling.carlier import schedule_optimal
from fleettune.scheduling.comparison import compare_policies
from fleettune.scheduling.fifo import schedule_fifo
from fleettune.scheduling.greedy import schedule_greedy
from fleettune.scheduling.jobs import Job, Schedule, evaluate_order
from fleettune.scheduling.registry import SCHEDULERS, Policy, server_policy
from fleettune.scheduling.schrage import schedule_schrage
from fleettune.scheduling.sharing import SHARING, processor_sharing, sharing_schedule

__all__ = [
    "SCHEDULERS",
    "SHARING",
    "Job",
    "Policy",
    "Schedule",
    "compare_policies",
    "evaluate_order",
    "preemptive_bound",
    "processor_sharing",
    "schedule_fifo",
    "schedule_greedy",
    "schedule_optimal",
    "schedule_schrage",
    "server_policy",
    "sharing_schedule",
]
