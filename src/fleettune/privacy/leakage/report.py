"""Assessments of a finished run on its final global model: backdoor success, membership and cut inversion."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from fleettune.config import RunConfig
from fleettune.data import Batch, Split, subset
from fleettune.evaluation import LogitsFn
from fleettune.models.layout import find_layout
from fleettune.models.stages import FullModel
from fleettune.privacy.leakage.inversion import CutModel, Release, invert
from fleettune.privacy.leakage.membership import loss_attack, sample_losses
from fleettune.schemes import RunSetup, Scheme, SchemeResult
from fleettune.schemes.evaluator import EvalResult, Evaluator
from fleettune.security.backdoor import attack_success

LEAKAGE_STREAM = 7  # the run's RNG stream drawing members, non-members, the victim's and the public texts
PUBLIC_TEXTS = 256  # texts the inversion attacker fits on: tens of thousands of tokens for an H x H regression


class FinalModelProbe(Evaluator):
    """The run's evaluator, remembering what it scored last: the final global model."""

    def __init__(self, inner: Evaluator) -> None:
        super().__init__(inner.test, inner.shares, inner.num_labels, inner.batch_size)
        self.last: LogitsFn | None = None

    def __call__(self, logits_fn: LogitsFn) -> EvalResult:
        self.last = logits_fn
        return super().__call__(logits_fn)

    def final_model(self) -> FullModel:
        # Every scheme scores its global model through the bound `logits` of a FullModel.
        model = getattr(self.last, "__self__", None)
        if not isinstance(model, FullModel):
            raise RuntimeError("the run scored no whole model, so there is nothing to assess")
        return model


def requested(config: RunConfig) -> bool:
    return bool(
        config.security.attack == "backdoor" or config.privacy.membership_samples or config.privacy.inversion_samples
    )


def run_assessed(scheme: Scheme, setup: RunSetup, config: RunConfig, test: Split) -> SchemeResult:
    """Train with `scheme`, then run the assessments `config` asks for on the final model (none: only train)."""
    if not requested(config):
        return scheme(setup)
    probe = FinalModelProbe(setup.evaluator)
    result = scheme(replace(setup, evaluator=probe))
    result.assessments = assess(config, setup, test, probe.final_model())
    return result


def assess(config: RunConfig, setup: RunSetup, test: Split, model: FullModel) -> dict[str, dict[str, Any]]:
    """Report sections by name (`backdoor`, `membership`, `inversion`) for the assessments `config` asks for."""
    model.eval()
    rng = setup.rng(LEAKAGE_STREAM)

    def batches(split: Split) -> Iterator[Batch]:
        return setup.batches.batcher(split, training=False).batches(config.eval_batch_size, False, None)

    security, privacy = config.security, config.privacy
    out: dict[str, dict[str, Any]] = {}
    if security.attack == "backdoor":
        trigger, target, fraction = security.backdoor_trigger, security.backdoor_target, security.backdoor_fraction
        out["backdoor"] = attack_success(model.logits, test, trigger, target, fraction, batches).to_dict()
    if privacy.membership_samples:
        # Members come from the clients' training splits, as trained on; non-members from the test split.
        pool = pooled([c.train for c in setup.clients])
        count = min(privacy.membership_samples, len(pool), len(test))
        members, non_members = sample(pool, count, rng), sample(test, count, rng)
        losses = [sample_losses(model.logits, batches(split)) for split in (members, non_members)]
        out["membership"] = loss_attack(*losses).to_dict()
    if privacy.inversion_samples:
        out["inversion"] = _inversion(setup, test, model, privacy.inversion_samples, rng, batches)
    return out


def _inversion(
    setup: RunSetup,
    test: Split,
    model: FullModel,
    count: int,
    rng: np.random.Generator,
    batches: Callable[[Split], Iterator[Batch]],
) -> dict[str, Any]:
    """The server attacks the first client; its public text is the other clients' training texts (the test
    split in a one-client run). The victim's activations come from the final global adapter's client part,
    which every client holds after the last aggregation."""
    victim, others = setup.clients[0], setup.clients[1:]
    victim_texts = sample(victim.train, count, rng)
    public_texts = sample(pooled([c.train for c in others]) if others else test, PUBLIC_TEXTS, rng)
    pretrained = setup.new_model()  # the server's copy of the public base model, without any client adapter
    final = model.peft.base_model.model
    table = pretrained.get_input_embeddings().weight
    assert isinstance(final, nn.Module) and isinstance(table, torch.Tensor)
    result = invert(
        CutModel(final, model.layout),
        CutModel(pretrained, find_layout(pretrained)),
        table,
        int(victim.device.cut_layer),
        batches(victim_texts),
        batches(public_texts),
        _release(setup),
        setup.batches.tokenizer.all_special_ids,
        seed=int(rng.integers(2**31)),
    )
    return {**result.to_dict(), "victim": victim.id, "public_texts": len(public_texts)}


def _release(setup: RunSetup) -> Release:
    """How the run's devices release activations: its protection (clip and noise, if any), then its cut codec."""
    privacy = setup.client_privacy
    if privacy is None or privacy.activation_clip is None:
        return Release(setup.wire)
    return Release(setup.wire, privacy.activation_clip, privacy.activation_noise)


def pooled(splits: Sequence[Split]) -> Split:
    """The rows of every split, in order (groups dropped)."""
    return Split([t for s in splits for t in s.texts], [label for s in splits for label in s.labels])


def sample(split: Split, count: int, rng: np.random.Generator) -> Split:
    """min(count, len(split)) rows drawn without replacement."""
    return subset(split, rng.choice(len(split), size=min(count, len(split)), replace=False))
