"""The run's initial adapter: the same seeded LoRA initialisation for every scheme."""

from __future__ import annotations

from fleettune.draws import global_rng_kept
from fleettune.models.stages import FullModel, full_model
from fleettune.schemes.base import RunSetup


def seeded_full_model(setup: RunSetup) -> FullModel:
    """The whole model with LoRA initialised from the run's seed (global RNG left untouched), so
    that every scheme starts from the same adapter."""
    with global_rng_kept(setup.plan.seed):
        model = full_model(setup.new_model(), setup.lora, setup.task)
    model.eval()  # PEFT leaves the wrapper in training mode; trainers switch it on when they train
    return model
