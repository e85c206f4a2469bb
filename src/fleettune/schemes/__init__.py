"""Training schemes: the round structure of each, registered by name."""

from fleettune.schemes import central, fl  # noqa: F401  (registration)
from fleettune.schemes.base import SCHEMES, ClientData, RunSetup, Scheme, SchemeResult, TrainingPlan
from fleettune.schemes.split import parallel, sequential  # noqa: F401  (registration)

__all__ = ["SCHEMES", "ClientData", "RunSetup", "Scheme", "SchemeResult", "TrainingPlan"]
