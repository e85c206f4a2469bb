"""Aggregation of LoRA adapters whose clients trained with different ranks.

Clients on weaker devices train lower-rank adapters, so their factors cannot be averaged key by
key. Two ways to combine them are offered here:

* HetLoRA-style zero padding (`hetlora_aggregate`, `hetlora_truncate`): every client's factors are
  padded to the largest rank and averaged rank slice by rank slice; each client then takes back the
  leading slices that fit its rank. Cheap and rank-preserving, but (like any averaging of factors)
  the aggregate's product is not the average of the clients' products.
* FLoRA-style stacking (`flora_stack`): the factors are concatenated along the rank axis, so the
  stacked adapter of rank sum(r_i) applies exactly the weighted sum of the clients' updates. Its rank
  grows with the fleet, so it is meant to be merged into the base weights (`lora_deltas`,
  `merge_into`) rather than trained further.

Conventions shared by every function:

* A state maps keys such as `<module>.lora_A.weight` (shape `(r, in)`) and `<module>.lora_B.weight`
  (shape `(out, r)`) to tensors; any other key (a trained head, say) must have the same shape for
  every client and is averaged with the client weights. Other LoRA variants (`lora_embedding_*`,
  DoRA magnitudes) are rejected, since the rank arithmetic below does not hold for them.
* A module's update is `(alpha / r) * B @ A`, PEFT's default scaling (not rsLoRA).
* `weights` are non-negative with a positive sum (sample counts will do) and are normalised to sum
  to one.
* `alpha` is one value for every client or one per client; the combined adapter uses `global_alpha`,
  which defaults to the clients' common alpha (and must be given when their alphas differ).
* Arithmetic runs in float64; each output tensor takes the dtype of client 0's tensor.
* Inputs are never modified. Malformed input raises `ValueError` with a one-line message.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import overload

import torch
from torch import nn

from fleettune.aggregation.fedavg import fedavg

AdapterState = dict[str, torch.Tensor]

_A_SUFFIX = ".lora_A.weight"
_B_SUFFIX = ".lora_B.weight"


@dataclass(frozen=True)
class _Layout:
    """The LoRA modules (key prefixes) and the other keys of a state, in the state's key order."""

    modules: tuple[str, ...]
    others: tuple[str, ...]


def _layout_of(state: Mapping[str, torch.Tensor], who: str) -> _Layout:
    modules: list[str] = []
    others: list[str] = []
    for key in state:
        if key.endswith(_A_SUFFIX):
            prefix = key.removesuffix(_A_SUFFIX)
            if prefix + _B_SUFFIX not in state:
                raise ValueError(f"{who}: {key} has no matching {prefix + _B_SUFFIX}")
            modules.append(prefix)
        elif key.endswith(_B_SUFFIX):
            if key.removesuffix(_B_SUFFIX) + _A_SUFFIX not in state:
                raise ValueError(f"{who}: {key} has no matching {key.removesuffix(_B_SUFFIX) + _A_SUFFIX}")
        elif ".lora_" in key or key.startswith("lora_"):
            raise ValueError(f"{who}: {key} is a LoRA tensor of a kind not supported here (only lora_A/B)")
        else:
            others.append(key)
    return _Layout(tuple(modules), tuple(others))


def _check_factors(state: Mapping[str, torch.Tensor], prefix: str, rank: int, who: str) -> None:
    a, b = state[prefix + _A_SUFFIX], state[prefix + _B_SUFFIX]
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"{who}: {prefix} has LoRA factors of shapes {tuple(a.shape)}, {tuple(b.shape)}")
    if a.shape[0] != rank:
        raise ValueError(f"{who}: {prefix + _A_SUFFIX} has rank {a.shape[0]} but the rank given is {rank}")
    if b.shape[1] != rank:
        raise ValueError(f"{who}: {prefix + _B_SUFFIX} has rank {b.shape[1]} but the rank given is {rank}")


def _check_rank(rank: int, what: str) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"{what} must be a positive integer, got {rank!r}")


def _check_alpha(alpha: float, what: str) -> None:
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"{what} must be a positive finite number, got {alpha!r}")


def _validate(
    states: Sequence[Mapping[str, torch.Tensor]],
    ranks: Sequence[int],
    weights: Sequence[float],
    alpha: float | Sequence[float],
) -> tuple[_Layout, list[float], list[float]]:
    """Check a fleet's states against their ranks; return the layout, normalised weights and alphas."""
    if not states:
        raise ValueError("no client states to aggregate")
    count = len(states)
    if len(ranks) != count:
        raise ValueError(f"need one rank per client state, got {count} states and {len(ranks)} ranks")
    if len(weights) != count:
        raise ValueError(f"need one weight per client state, got {count} states and {len(weights)} weights")
    alphas = [float(alpha)] * count if isinstance(alpha, int | float) else [float(x) for x in alpha]
    if len(alphas) != count:
        raise ValueError(f"need one alpha per client state, got {count} states and {len(alphas)} alphas")
    for i in range(count):
        _check_rank(ranks[i], f"client {i}: rank")
        _check_alpha(alphas[i], f"client {i}: alpha")
        if not math.isfinite(weights[i]) or weights[i] < 0:
            raise ValueError(f"client {i}: weight must be non-negative and finite, got {weights[i]!r}")
    total = math.fsum(weights)
    if total <= 0:
        raise ValueError(f"client weights must have a positive sum, got {list(weights)}")

    layout = _layout_of(states[0], "client 0")
    first = states[0]
    for i, state in enumerate(states):
        if i > 0 and set(state) != set(first):
            missing = sorted(set(first) - set(state))[:3]
            extra = sorted(set(state) - set(first))[:3]
            raise ValueError(f"client {i} keys differ from client 0: missing {missing}, unexpected {extra}")
        for prefix in layout.modules:
            _check_factors(state, prefix, ranks[i], f"client {i}")
            for suffix, dim in ((_A_SUFFIX, 1), (_B_SUFFIX, 0)):
                key = prefix + suffix
                if state[key].shape[dim] != first[key].shape[dim]:
                    raise ValueError(
                        f"client {i}: {key} has shape {tuple(state[key].shape)}, "
                        f"incompatible with client 0's {tuple(first[key].shape)}"
                    )
        for key in layout.others:
            if state[key].shape != first[key].shape:
                raise ValueError(
                    f"client {i}: {key} has shape {tuple(state[key].shape)}, client 0 has {tuple(first[key].shape)}"
                )
    return layout, [w / total for w in weights], alphas


def _resolve_global_alpha(alphas: Sequence[float], global_alpha: float | None) -> float:
    if global_alpha is None:
        if any(a != alphas[0] for a in alphas):
            raise ValueError(f"clients use different alphas {list(alphas)}: pass global_alpha")
        return alphas[0]
    _check_alpha(global_alpha, "global_alpha")
    return float(global_alpha)


def _average_others(
    states: Sequence[Mapping[str, torch.Tensor]], keys: Sequence[str], weights: Sequence[float]
) -> AdapterState:
    if not keys:
        return {}
    return fedavg([{k: state[k] for k in keys} for state in states], weights)


def _f64(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to(torch.float64)


def hetlora_aggregate(
    states: Sequence[Mapping[str, torch.Tensor]],
    ranks: Sequence[int],
    weights: Sequence[float],
    alpha: float | Sequence[float],
    *,
    global_alpha: float | None = None,
) -> tuple[AdapterState, int]:
    """Zero-pad every client's factors to the largest rank R and average them slice by slice.

    Scaling: before padding, client i's B is multiplied by `(alpha_i / r_i) / (global_alpha / R)`,
    so at the global scaling `global_alpha / R` the padded client applies exactly its own update;
    averaging then mixes like with like whatever the clients' ranks.

    Weighting: with normalised weights w_i, rank slice j (row j of A, column j of B) is the average
    of the clients whose rank exceeds j, weighted by w_i renormalised over those clients. Slices held
    by a single client thus keep that client's values instead of being shrunk towards the zero
    padding of the others; a slice whose holders all have weight zero is zero. With equal ranks and
    alphas this is plain FedAvg of A and B. Non-LoRA tensors are averaged with w_i.

    Returns the global state (factors of rank R, keys as the clients') and R.
    """
    layout, norm, alphas = _validate(states, ranks, weights, alpha)
    global_rank = max(ranks)
    global_scale = _resolve_global_alpha(alphas, global_alpha) / global_rank

    # coef[i, j]: client i's share of rank slice j.
    coef = torch.zeros(len(states), global_rank, dtype=torch.float64)
    for j in range(global_rank):
        holders = [i for i, r in enumerate(ranks) if r > j]
        total = math.fsum(norm[i] for i in holders)
        if total > 0:
            for i in holders:
                coef[i, j] = norm[i] / total

    out: AdapterState = {}
    for prefix in layout.modules:
        a_key, b_key = prefix + _A_SUFFIX, prefix + _B_SUFFIX
        a0, b0 = states[0][a_key], states[0][b_key]
        a_acc = torch.zeros(global_rank, a0.shape[1], dtype=torch.float64, device=a0.device)
        b_acc = torch.zeros(b0.shape[0], global_rank, dtype=torch.float64, device=b0.device)
        share = coef.to(a0.device)
        for i, state in enumerate(states):
            r = ranks[i]
            rescale = (alphas[i] / r) / global_scale
            a_acc[:r] += share[i, :r, None] * _f64(state[a_key])
            b_acc[:, :r] += share[i, None, :r] * (rescale * _f64(state[b_key]))
        out[a_key] = a_acc.to(a0.dtype)
        out[b_key] = b_acc.to(b0.dtype)
    out.update(_average_others(states, layout.others, norm))
    return {key: out[key] for key in states[0]}, global_rank


def hetlora_truncate(
    global_state: Mapping[str, torch.Tensor],
    rank: int,
    alpha: float,
    global_rank: int,
    *,
    global_alpha: float | None = None,
) -> AdapterState:
    """A client's rank-`rank` adapter from a HetLoRA global state: the first `rank` rows of each A and
    columns of each B, with B multiplied by `(global_alpha / global_rank) / (alpha / rank)`.

    The rescaling undoes the one `hetlora_aggregate` applies, so the client's adapter applies exactly
    the global adapter's leading `rank` slices, and padding a lone client then truncating it returns
    its own state. Non-LoRA tensors are copied. `global_alpha` defaults to `alpha`.
    """
    _check_rank(global_rank, "global_rank")
    _check_rank(rank, "rank")
    _check_alpha(alpha, "alpha")
    if rank > global_rank:
        raise ValueError(f"cannot truncate a rank-{global_rank} state to the larger rank {rank}")
    layout = _layout_of(global_state, "global state")
    for prefix in layout.modules:
        _check_factors(global_state, prefix, global_rank, "global state")
    g_alpha = alpha if global_alpha is None else global_alpha
    _check_alpha(g_alpha, "global_alpha")
    rescale = (g_alpha / global_rank) / (alpha / rank)

    out: AdapterState = {}
    for key, value in global_state.items():
        if key.endswith(_A_SUFFIX):
            out[key] = value.detach()[:rank].clone()
        elif key.endswith(_B_SUFFIX):
            out[key] = (rescale * _f64(value[:, :rank])).to(value.dtype)
        else:
            out[key] = value.detach().clone()
    return out


def flora_stack(
    states: Sequence[Mapping[str, torch.Tensor]],
    ranks: Sequence[int],
    weights: Sequence[float],
    alpha: float | Sequence[float],
    *,
    global_alpha: float | None = None,
) -> tuple[AdapterState, int]:
    """Stack the clients' factors along the rank axis into one adapter of rank R = sum(r_i).

    In client order, B_stack = [B_1 | B_2 | ...] and A_stack = [c_1 A_1; c_2 A_2; ...] with
    c_i = w_i * (alpha_i / r_i) / (global_alpha / R), w_i the normalised weights. Then for every
    module `(global_alpha / R) * B_stack @ A_stack == sum_i w_i (alpha_i / r_i) B_i @ A_i` up to
    rounding: the cross terms that averaging factors would create never arise. Non-LoRA tensors are
    averaged with w_i.

    Returns the stacked state (keys as the clients') and R.
    """
    layout, norm, alphas = _validate(states, ranks, weights, alpha)
    stacked_rank = sum(ranks)
    global_scale = _resolve_global_alpha(alphas, global_alpha) / stacked_rank
    coefs = [norm[i] * (alphas[i] / ranks[i]) / global_scale for i in range(len(states))]

    out: AdapterState = {}
    for prefix in layout.modules:
        a_key, b_key = prefix + _A_SUFFIX, prefix + _B_SUFFIX
        a_parts = [c * _f64(state[a_key]) for c, state in zip(coefs, states, strict=True)]
        out[a_key] = torch.cat(a_parts, dim=0).to(states[0][a_key].dtype)
        out[b_key] = torch.cat([state[b_key].detach() for state in states], dim=1).to(states[0][b_key].dtype)
    out.update(_average_others(states, layout.others, norm))
    return {key: out[key] for key in states[0]}, stacked_rank


def lora_deltas(
    state: Mapping[str, torch.Tensor], alpha: float, rank: int, *, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """The dense update `(alpha / rank) * B @ A` of every LoRA module, keyed by the module's path
    (the key without `.lora_A.weight`), of shape `(out, in)` like the module's weight.

    Computed in float64 and returned in `dtype` (default: B's dtype). Non-LoRA keys are ignored.
    """
    _check_rank(rank, "rank")
    _check_alpha(alpha, "alpha")
    layout = _layout_of(state, "state")
    deltas: dict[str, torch.Tensor] = {}
    for prefix in layout.modules:
        _check_factors(state, prefix, rank, "state")
        b = state[prefix + _B_SUFFIX]
        delta = (alpha / rank) * (_f64(b) @ _f64(state[prefix + _A_SUFFIX]))
        deltas[prefix] = delta.to(dtype or b.dtype)
    return deltas


@overload
def merge_into(target: Mapping[str, torch.Tensor], deltas: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


@overload
def merge_into(target: nn.Module, deltas: Mapping[str, torch.Tensor]) -> nn.Module: ...


def merge_into(
    target: Mapping[str, torch.Tensor] | nn.Module, deltas: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor] | nn.Module:
    """Add each module's delta to its base weight: how a stacked adapter is folded into the model.

    For a mapping of weights (keys `<module>.weight`), return a new mapping and leave the input
    alone. For a module, update the weights of its submodules `<module>` in place and return it; a
    PEFT LoRA layer's base layer is the one updated. Delta paths are relative to `target`.
    """
    if isinstance(target, nn.Module):
        with torch.no_grad():
            for prefix, delta in deltas.items():
                try:
                    module = target.get_submodule(prefix)
                except AttributeError:
                    raise ValueError(f"no module {prefix} to merge a delta into") from None
                module = getattr(module, "base_layer", module)
                weight = getattr(module, "weight", None)
                if not isinstance(weight, torch.Tensor) or weight.shape != delta.shape:
                    shape = None if not isinstance(weight, torch.Tensor) else tuple(weight.shape)
                    raise ValueError(f"{prefix}: weight of shape {shape} cannot take a delta of {tuple(delta.shape)}")
                weight.add_(delta.to(device=weight.device, dtype=weight.dtype))
        return target

    merged = {key: value.detach().clone() for key, value in target.items()}
    for prefix, delta in deltas.items():
        key = prefix + ".weight"
        if key not in merged:
            raise ValueError(f"no weight {key} to merge a delta into")
        if merged[key].shape != delta.shape:
            raise ValueError(f"{key} has shape {tuple(merged[key].shape)}, the delta {tuple(delta.shape)}")
        merged[key] = (_f64(merged[key]) + _f64(delta)).to(merged[key].dtype)
    return merged
