"""Sample-level differential privacy for a client's local training (DP-SGD).

Every sample's gradient (over all trainable parameters together, normally the LoRA factors and the head) is
scaled down to L2 norm at most C, the clipped gradients are summed, Gaussian noise of standard deviation
sigma * C is added to every coordinate of the sum, and the result is divided by the batch size (or by a
public `denominator`). One sample changes the sum by at most C (add/remove adjacency), which is the sampled
Gaussian mechanism that `PrivacyAccountant(noise_multiplier=sigma, sample_rate=batch/dataset, ...)` accounts,
one step per optimiser step. Under Poisson sampling of batches the batch size is random; for the strict
guarantee divide by the expected batch size (`denominator`), as Opacus does.

Per-sample gradients come from torch.func (functional_call, grad and vmap), so they need no model hooks: the
model runs on one sample at a time, vectorised over the batch, with frozen parameters and buffers passed
through unchanged. Models whose forward branches on tensor values (most transformers models do, on the
attention mask) cannot be vmapped; for them `per_sample_gradients` falls back to an autograd loop over the
samples, which gives the same gradients more slowly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fleettune.privacy.dp import gaussian_like
from fleettune.privacy.params import check_clip, check_noise

SampleLoss = Callable[..., torch.Tensor]
"""loss(forward, *sample) -> scalar: `forward(*args, **kwargs)` runs the model; each sample tensor keeps a
leading batch dimension of size 1, e.g. `lambda forward, x, y: F.cross_entropy(forward(x), y)`."""


class PrivateGradient(NamedTuple):
    """The clipped, noised and averaged gradient per trainable parameter, and each sample's norm before clipping."""

    grads: dict[str, torch.Tensor]
    norms: torch.Tensor


def per_sample_gradients(
    model: nn.Module, loss: SampleLoss, *batch: torch.Tensor, method: str = "auto"
) -> dict[str, torch.Tensor]:
    """The gradient of `loss` for each sample of the batch, per trainable parameter: shape (batch, *param.shape).

    `batch` holds tensors sharing the leading batch dimension (inputs, labels, masks ...). `method` "vmap" runs
    torch.func over the batch (fast; dropout draws a separate mask per sample); "loop" runs plain autograd
    one sample at a time (works for any model, e.g. transformers models whose forward branches on the attention
    mask, which vmap rejects); "auto" tries vmap and falls back to the loop when vmap cannot trace the model
    (pass "loop" for such models to skip the failed attempt on every batch).
    """
    if not batch:
        raise ValueError("per_sample_gradients needs at least one batch tensor")
    if method not in ("auto", "vmap", "loop"):
        raise ValueError(f"method must be 'auto', 'vmap' or 'loop', got {method!r}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("the model has no trainable parameters")
    if method == "loop":
        return _looped(model, loss, batch)
    try:
        return _vmapped(model, loss, batch)
    except RuntimeError:
        if method == "vmap":
            raise
        return _looped(model, loss, batch)


def _vmapped(model: nn.Module, loss: SampleLoss, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    trainable = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    fixed: dict[str, torch.Tensor] = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    fixed.update(dict(model.named_buffers()))

    def sample_loss(params: dict[str, torch.Tensor], *sample: torch.Tensor) -> torch.Tensor:
        def forward(*args: Any, **kwargs: Any) -> Any:
            return functional_call(model, (params, fixed), args, kwargs)

        return loss(forward, *(tensor.unsqueeze(0) for tensor in sample))

    in_dims = (None, *([0] * len(batch)))
    grads: dict[str, torch.Tensor] = vmap(grad(sample_loss), in_dims=in_dims, randomness="different")(trainable, *batch)
    return grads


def _looped(model: nn.Module, loss: SampleLoss, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    rows: list[tuple[torch.Tensor, ...]] = []
    for i in range(batch[0].shape[0]):
        value = loss(model, *(tensor[i : i + 1] for tensor in batch))
        rows.append(torch.autograd.grad(value, [p for _, p in named], allow_unused=True, materialize_grads=True))
    return {name: torch.stack([row[k] for row in rows]) for k, (name, _) in enumerate(named)}


def clip_and_noise(
    per_sample: Mapping[str, torch.Tensor],
    clip: float,
    noise_multiplier: float,
    generator: torch.Generator,
    denominator: float | None = None,
) -> PrivateGradient:
    """(sum_b min(1, C / norm_b) * g_b + N(0, (sigma * C)^2)) / denominator, per parameter.

    `per_sample` maps parameter names to (batch, *shape) gradients; norm_b is sample b's L2 norm over all of
    them. The denominator defaults to the batch size. Noise is drawn from `generator` parameter by parameter
    in key order; noise_multiplier 0 draws none (clipping only).
    """
    check_clip(clip)
    check_noise(noise_multiplier)
    if not per_sample:
        raise ValueError("no per-sample gradients given")
    sizes = {tensor.shape[0] for tensor in per_sample.values()}
    if len(sizes) != 1:
        raise ValueError(f"per-sample gradients disagree on the batch size: {sorted(sizes)}")
    batch_size = sizes.pop()
    if denominator is not None and not denominator > 0:
        raise ValueError(f"denominator must be > 0, got {denominator}")
    total = float(batch_size if denominator is None else denominator)
    norms = per_sample_norms(per_sample)
    # clip / max(norm, clip) is min(1, clip / norm) without dividing by a zero norm.
    factors = clip / torch.clamp(norms, min=clip)
    grads: dict[str, torch.Tensor] = {}
    for name, tensor in per_sample.items():
        summed = torch.tensordot(factors.to(tensor.device), tensor.detach().to(torch.float64), dims=1)
        if noise_multiplier > 0:
            summed = summed + noise_multiplier * clip * gaussian_like(summed, generator)
        grads[name] = (summed / total).to(tensor.dtype)
    return PrivateGradient(grads, norms)


def per_sample_norms(per_sample: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Each sample's gradient norm over all parameters together, as a float64 (batch,) tensor."""
    squares = [tensor.detach().to(torch.float64).flatten(1).pow(2).sum(dim=1) for tensor in per_sample.values()]
    return torch.stack(squares).sum(dim=0).sqrt().cpu()


def private_gradients(
    model: nn.Module,
    loss: SampleLoss,
    *batch: torch.Tensor,
    clip: float,
    noise_multiplier: float,
    generator: torch.Generator,
    denominator: float | None = None,
    method: str = "auto",
) -> PrivateGradient:
    """`per_sample_gradients` (with `method`) followed by `clip_and_noise`: one DP-SGD gradient for the batch."""
    check_clip(clip)
    check_noise(noise_multiplier)
    per_sample = per_sample_gradients(model, loss, *batch, method=method)
    return clip_and_noise(per_sample, clip, noise_multiplier, generator, denominator)


def assign_gradients(model: nn.Module, grads: Mapping[str, torch.Tensor]) -> None:
    """Write `grads` into the `.grad` of the named parameters (replacing any), ready for optimizer.step()."""
    params = dict(model.named_parameters())
    unknown = sorted(set(grads) - set(params))
    if unknown:
        raise ValueError(f"gradients for parameters the model does not have: {unknown[:3]}")
    for name, value in grads.items():
        param = params[name]
        param.grad = value.detach().to(device=param.device, dtype=param.dtype).clone()


def graph_per_sample_gradients(
    outputs: torch.Tensor, cotangents: torch.Tensor, params: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Per parameter, the (batch, *shape) gradients of <outputs[b], cotangents[b]> from the existing graph.

    For training runs, whose forward has already happened (a split client's graph waits for the cut gradient).
    Exact whenever samples do not mix in the forward (transformers without batch normalisation); dropout masks
    are the forward's, so nothing is drawn again. One backward vectorised over the batch (`is_grads_batched`); an
    operation without a batching rule falls back to one backward per sample. Parameters the graph does not reach
    get zeros. The graph lives as long as `outputs`.
    """
    if outputs.shape != cotangents.shape:
        raise ValueError(f"cotangents of shape {tuple(cotangents.shape)} do not match outputs {tuple(outputs.shape)}")
    n = outputs.shape[0]
    names = list(params)
    tensors = [params[name] for name in names]
    # Row b of the batched cotangent keeps sample b's slice only: one backward per row gives sample b's gradient.
    selector = torch.eye(n, dtype=outputs.dtype, device=outputs.device).view(n, n, *([1] * (outputs.dim() - 1)))
    batched = selector * cotangents.to(outputs.dtype).unsqueeze(0)
    try:
        grads = torch.autograd.grad(
            outputs, tensors, grad_outputs=batched, is_grads_batched=True, retain_graph=True, materialize_grads=True
        )
    except RuntimeError:
        rows = [
            torch.autograd.grad(outputs, tensors, grad_outputs=batched[b], retain_graph=True, materialize_grads=True)
            for b in range(n)
        ]
        grads = tuple(torch.stack([row[k] for row in rows]) for k in range(len(tensors)))
    return {name: grad.detach() for name, grad in zip(names, grads, strict=True)}


def private_backward(
    model: nn.Module,
    outputs: torch.Tensor,
    cotangents: torch.Tensor,
    clip: float,
    noise_multiplier: float,
    generator: torch.Generator,
) -> PrivateGradient:
    """DP-SGD's gradient of `model`'s trainable parameters written into their `.grad`, from an existing graph.

    Sample b's loss gradient is that of <outputs[b], cotangents[b]> (for a batch-mean loss: per-sample losses
    with cotangent 1, or a split client's activations with n times its slice of the cut gradient); the
    gradients are clipped, summed, noised and divided by the batch size (`clip_and_noise`).
    """
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("the model has no trainable parameters")
    per_sample = graph_per_sample_gradients(outputs, cotangents, params)
    private = clip_and_noise(per_sample, clip, noise_multiplier, generator)
    assign_gradients(model, private.grads)
    return private
