"""Client-level differential privacy for aggregation (DP-FedAvg): clip every client's update, noise the aggregate.

The mechanism. Each participating client's update (its trained adapter minus the global adapter it started
from: clipping whole adapters would be meaningless) is scaled down to global L2 norm at most C, over all its
tensors together (`clip_update`). The server forms the weighted sum S = sum_i s_i * update_i with scale factors
s_i = w_i / max_j w_j in [0, 1], adds Gaussian noise of standard deviation sigma * C to every coordinate of S, and
divides by D = sum_i s_i (or by a public constant `denominator`) (`noisy_aggregate`).

Why that is private. Adding or removing one client changes S by s_i * update_i, of L2 norm at most C, so the
noisy sum is the Gaussian mechanism with noise multiplier sigma at sensitivity C; run on the clients sampled
for a round at rate q, it is exactly the sampled Gaussian mechanism that
`PrivacyAccountant(noise_multiplier=sigma, sample_rate=q, ...)` accounts, one step per round, with add/remove
adjacency of a whole client (all its data). Dividing by D is post-processing when D is public: the default
D = sum_i s_i (n for uniform weights) treats who took part as known to the server, as it is in plain FedAvg.
For the strict guarantee under Poisson sampling of clients, where the number of participants is itself
random, pass the expected value instead (q * number of clients, with uniform weights).

Noise on the result. Uniform weights give standard deviation sigma * C / n per coordinate. With weights it is
sigma * C / sum_i s_i = sigma * C * max(w) / sum(w): skewed weights (e.g. sample counts) buy more influence for
big clients at the price of more noise relative to the signal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from fleettune.privacy.params import check_clip, check_noise

AdapterState = dict[str, torch.Tensor]

CLIP_SLACK = 1e-5
"""Relative slack when checking that an update was clipped (rounding to float32 can overshoot C slightly)."""


def update_norm(update: Mapping[str, torch.Tensor]) -> float:
    """The global L2 norm of an update: over all its tensors together, accumulated in float64."""
    total = sum(float(tensor.detach().to(torch.float64).pow(2).sum()) for tensor in update.values())
    return math.sqrt(total)


def clip_update(update: Mapping[str, torch.Tensor], clip: float) -> tuple[AdapterState, float]:
    """The update scaled by min(1, clip / norm), in its own dtypes, and its norm before clipping.

    The input is not modified; an update already within the bound is returned as an equal copy.
    """
    check_clip(clip)
    norm = update_norm(update)
    factor = 1.0 if norm <= clip else clip / norm
    clipped = {key: (tensor.detach().to(torch.float64) * factor).to(tensor.dtype) for key, tensor in update.items()}
    return clipped, norm


def noisy_aggregate(
    clipped_updates: Sequence[Mapping[str, torch.Tensor]],
    clip: float,
    noise_multiplier: float,
    generator: torch.Generator,
    weights: Sequence[float] | None = None,
    denominator: float | None = None,
) -> AdapterState:
    """(sum_i s_i * update_i + N(0, (noise_multiplier * clip)^2)) / D per coordinate; see the module docstring.

    s_i = w_i / max(w) (all 1 without weights); D = `denominator`, or sum_i s_i when it is None. The updates must
    already be clipped to `clip` (ValueError otherwise). The noise is drawn from `generator` tensor by tensor
    in the key order of the first update, so a fixed seed gives a fixed result; noise_multiplier 0 draws none.
    """
    check_clip(clip)
    check_noise(noise_multiplier)
    if not clipped_updates:
        raise ValueError("need at least one update to aggregate")
    scales = _scales(weights, len(clipped_updates))
    if denominator is not None and not denominator > 0:
        raise ValueError(f"denominator must be > 0, got {denominator}")
    total = float(scales.sum()) if denominator is None else float(denominator)
    first = clipped_updates[0]
    for i, update in enumerate(clipped_updates):
        if set(update) != set(first):
            raise ValueError(f"update {i} holds different keys from update 0: {sorted(set(first) ^ set(update))[:3]}")
        norm = update_norm(update)
        if norm > clip * (1 + CLIP_SLACK):
            raise ValueError(f"update {i} has norm {norm:.6g} above clip {clip}: clip it with clip_update first")
    out: AdapterState = {}
    for key, reference in first.items():
        acc = torch.zeros(reference.shape, dtype=torch.float64, device=reference.device)
        for scale, update in zip(scales.tolist(), clipped_updates, strict=True):
            acc += scale * update[key].detach().to(torch.float64)
        if noise_multiplier > 0:
            acc += noise_multiplier * clip * gaussian_like(acc, generator)
        out[key] = (acc / total).to(reference.dtype)
    return out


def dp_fedavg(
    updates: Sequence[Mapping[str, torch.Tensor]],
    clip: float,
    noise_multiplier: float,
    generator: torch.Generator,
    weights: Sequence[float] | None = None,
    denominator: float | None = None,
) -> tuple[AdapterState, list[float]]:
    """Clip every update to `clip`, then `noisy_aggregate` them; also returns the norms before clipping."""
    clipped, norms = [], []
    for update in updates:
        state, norm = clip_update(update, clip)
        clipped.append(state)
        norms.append(norm)
    return noisy_aggregate(clipped, clip, noise_multiplier, generator, weights, denominator), norms


def gaussian_like(reference: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal float64 noise of `reference`'s shape, drawn from `generator` and moved to its device."""
    noise = torch.randn(reference.shape, generator=generator, dtype=torch.float64, device=generator.device)
    return noise.to(reference.device)


def _scales(weights: Sequence[float] | None, n: int) -> torch.Tensor:
    if weights is None:
        return torch.ones(n, dtype=torch.float64)
    if len(weights) != n:
        raise ValueError(f"need one weight per update, got {n} updates and {len(weights)} weights")
    w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
    if bool((w < 0).any()) or not bool(torch.isfinite(w).all()) or float(w.max()) <= 0:
        raise ValueError(f"weights must be finite and non-negative with a positive sum, got {list(weights)}")
    return w / w.max()
