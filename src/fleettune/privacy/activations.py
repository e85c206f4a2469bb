"""Protection of the activations a client sends across the cut in split learning.

Each sample's activation (its [seq, dim] slice, with padded positions set to zero) is scaled down to L2 norm at
most C, and Gaussian noise of standard deviation sigma * C is added to its real-token positions; padded positions
are sent as zeros, since they may carry information about the real tokens. Clipping stays differentiable, so
the client can back-propagate the gradient the server returns through it.

The privacy of one release. The server sees every sample's noisy activation on its own (not a sum), so there is
no amplification by sampling: each release is a plain Gaussian mechanism, accounted with Opacus's accountant at
sample_rate 1 and one step per release (`activation_epsilon`, `activation_accountant`); k releases of the same
sample (e.g. one per epoch) compose as k steps. The sensitivity depends on the adjacency:

* "replace" (default): the sample is swapped for any other one. Two clipped activations differ by up to 2C, so
  the accounted noise multiplier is sigma / 2.
* "zero_out": the sample's activation is compared with an all-zero one. The difference is at most C, so the
  accounted noise multiplier is sigma, the same convention as add/remove accounting elsewhere.

The guarantee covers what the activations reveal about their own sample; labels sent to the server and the
model updates are outside it and need their own protection.
"""

from __future__ import annotations

import torch

from fleettune.errors import ConfigError
from fleettune.privacy.accounting import PrivacyAccountant, epsilon_for
from fleettune.privacy.params import check_accounted_noise, check_clip, check_noise, check_steps

ADJACENCIES = {"replace": 2.0, "zero_out": 1.0}
"""Adjacency name -> L2 sensitivity of one release in units of C."""


def real_token_mask(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """A (batch, seq, 1) float mask of the real tokens: 1 where attention_mask is non-zero, everywhere when None."""
    if hidden.dim() != 3:
        raise ValueError(f"activations must be (batch, seq, dim), got shape {tuple(hidden.shape)}")
    if attention_mask is None:
        return torch.ones(*hidden.shape[:2], 1, dtype=hidden.dtype, device=hidden.device)
    if tuple(attention_mask.shape) != tuple(hidden.shape[:2]):
        raise ValueError(
            f"attention mask of shape {tuple(attention_mask.shape)} does not match activations {tuple(hidden.shape)}"
        )
    return (attention_mask != 0).to(device=hidden.device, dtype=hidden.dtype).unsqueeze(-1)


def activation_norms(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Each sample's L2 norm over its real-token positions, as a (batch,) tensor of at least float32 precision."""
    work = torch.promote_types(hidden.dtype, torch.float32)
    mask = real_token_mask(hidden, attention_mask).to(work)
    return torch.linalg.vector_norm(hidden.to(work) * mask, dim=(1, 2))


def protect_activations(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor | None,
    clip: float,
    noise_multiplier: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """The activations with padding zeroed, each sample clipped to norm `clip`, noise sigma * C on real tokens.

    Same shape and dtype as `hidden`; gradients flow through the clipping. The noise is drawn from `generator`
    over the whole (batch, seq, dim) block (in float32, or float64 for float64 input); noise_multiplier 0 draws
    none.
    """
    check_clip(clip)
    check_noise(noise_multiplier)
    work = torch.promote_types(hidden.dtype, torch.float32)
    mask = real_token_mask(hidden, attention_mask).to(work)
    masked = hidden.to(work) * mask
    # vector_norm's gradient at a zero norm is zero, where sqrt of a sum of squares would give NaN.
    norms = torch.linalg.vector_norm(masked, dim=(1, 2))
    # clip / max(norm, clip) is min(1, clip / norm) without dividing by a zero norm.
    factors = clip / torch.clamp(norms, min=clip)
    out = masked * factors.view(-1, 1, 1)
    if noise_multiplier > 0:
        noise = torch.randn(hidden.shape, generator=generator, dtype=work, device=generator.device)
        out = out + noise_multiplier * clip * noise.to(hidden.device) * mask
    return out.to(hidden.dtype)


def activation_noise_multiplier(noise_multiplier: float, adjacency: str = "replace") -> float:
    """The noise multiplier to account for one release: sigma divided by the sensitivity in units of C."""
    check_accounted_noise(noise_multiplier)
    if adjacency not in ADJACENCIES:
        raise ConfigError(f"unknown adjacency {adjacency!r}; expected one of: {', '.join(ADJACENCIES)}")
    return noise_multiplier / ADJACENCIES[adjacency]


def activation_epsilon(
    noise_multiplier: float, delta: float, releases: int = 1, mechanism: str = "rdp", adjacency: str = "replace"
) -> float:
    """The epsilon of `releases` protected releases of one sample's activation, at `delta`."""
    check_steps(releases)
    sigma = activation_noise_multiplier(noise_multiplier, adjacency)
    return epsilon_for(sigma, 1.0, releases, delta, mechanism)


def activation_accountant(
    noise_multiplier: float, delta: float, mechanism: str = "rdp", adjacency: str = "replace"
) -> PrivacyAccountant:
    """An accountant to step once per release of a sample's activation (e.g. once per epoch)."""
    sigma = activation_noise_multiplier(noise_multiplier, adjacency)
    return PrivacyAccountant(noise_multiplier=sigma, sample_rate=1.0, delta=delta, mechanism=mechanism)
