"""Report sections of the privacy applied during training: activation protection, DP-SGD, secure aggregation."""

from __future__ import annotations

import math
from typing import Any

from fleettune.aggregation.secure import SecAggTotals
from fleettune.config import PrivacySettings
from fleettune.privacy.accounting import PrivacyAccountant
from fleettune.privacy.activations import activation_epsilon
from fleettune.schemes import RunSetup, SchemeResult


def activations_section(privacy: PrivacySettings, setup: RunSetup, result: SchemeResult) -> dict[str, Any] | None:
    """The protection of cut activations and its epsilon, per release and over the run (None: not protected).

    Releases per sample are counted exactly: a client's batches come in passes over its data (each a fresh
    permutation), so after k batches of the m per pass its most-released samples went out ceil(k / m) times.
    """
    if privacy.activation_clip is None:
        return None
    releases = {
        c.id: math.ceil(result.cut_batches.get(c.id, 0) / setup.batches.steps_per_epoch(c.train)) for c in setup.clients
    }
    worst = max(releases, key=lambda c: releases[c])
    sigma = privacy.activation_noise
    per_release = total = None
    if sigma > 0:
        mechanism, adjacency = privacy.dp_accountant, privacy.activation_adjacency
        per_release = activation_epsilon(sigma, privacy.dp_delta, 1, mechanism, adjacency)
        total = activation_epsilon(sigma, privacy.dp_delta, releases[worst], mechanism, adjacency)
    return {
        "clip": privacy.activation_clip,
        "noise_multiplier": sigma,
        "adjacency": privacy.activation_adjacency,
        "delta": privacy.dp_delta,
        "mechanism": privacy.dp_accountant,
        "epsilon_per_release": per_release,
        "releases_per_sample": releases[worst],
        "releases_counted": "exact",
        "epsilon": total,
        "client_releases": releases,
    }


def dpsgd_section(privacy: PrivacySettings, setup: RunSetup, result: SchemeResult) -> dict[str, Any] | None:
    """DP-SGD of the devices' own parameters: each client's sample rate, steps and epsilon, and the worst epsilon
    (None: no DP-SGD). The sample rate is batch size over the client's samples, one accountant step per optimizer
    step of the client, every step it took counted (also work a dropout later discarded)."""
    if privacy.dpsgd_clip is None:
        return None
    sigma = privacy.dpsgd_noise
    clients: dict[str, dict[str, Any]] = {}
    for c in setup.clients:
        rate = min(1.0, setup.plan.batch_size / len(c.train))
        steps = result.client_steps.get(c.id, 0)
        epsilon = None
        if sigma > 0:
            accountant = PrivacyAccountant(
                noise_multiplier=sigma, sample_rate=rate, delta=privacy.dp_delta, mechanism=privacy.dp_accountant
            )
            if steps:
                accountant.step(steps)
            epsilon = accountant.epsilon()
        clients[c.id] = {"sample_rate": rate, "steps": steps, "epsilon": epsilon}
    worst = None if sigma == 0 else max(clients, key=lambda c: clients[c]["epsilon"])
    return {
        "clip": privacy.dpsgd_clip,
        "noise_multiplier": sigma,
        "delta": privacy.dp_delta,
        "mechanism": privacy.dp_accountant,
        "epsilon": None if worst is None else clients[worst]["epsilon"],
        "worst_client": worst,
        "clients": clients,
    }


def secure_aggregation_section(totals: SecAggTotals | None, client_ids: list[str]) -> dict[str, Any] | None:
    """The protocol's threshold, encoding and what it cost each client beyond its masked upload (None: off)."""
    if totals is None:
        return None
    return {
        "threshold": totals.threshold,
        "range": totals.value_range,
        "resolution": totals.resolution,
        "aggregations": totals.aggregations,
        "aborted": totals.aborted,
        "clipped_values": totals.clipped_values,
        "bytes_per_client": {
            c: {"uplink": totals.uplink.get(c, 0), "downlink": totals.downlink.get(c, 0)} for c in client_ids
        },
    }
