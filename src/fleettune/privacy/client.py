"""What a device applies to what leaves it: protection of its cut activations and DP-SGD of its own parameters."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from fleettune.errors import ConfigError
from fleettune.privacy.params import check_clip, check_noise


@dataclass(frozen=True)
class ClientPrivacy:
    """Numbers only, so a coordinator can hand them to a device as they are.

    Activations: each sample's cut activation is clipped to L2 norm `activation_clip` and gets Gaussian noise of
    standard deviation `activation_noise` x `activation_clip` on its real tokens (`privacy.activations`).
    DP-SGD: each sample's gradient of the device's own trainable parameters is clipped to `dpsgd_clip`, the batch's
    sum gets noise of standard deviation `dpsgd_noise` x `dpsgd_clip` (`privacy.dpsgd`). A clip of None turns a
    mechanism off; a noise multiplier of 0 with a clip clips without noise (no guarantee).
    """

    activation_clip: float | None = None
    activation_noise: float = 0.0
    dpsgd_clip: float | None = None
    dpsgd_noise: float = 0.0
    noise_seed: int | None = None  # seeds the device's noise generator; None: fresh entropy from the system

    def __post_init__(self) -> None:
        for clip, noise, name in (
            (self.activation_clip, self.activation_noise, "activation"),
            (self.dpsgd_clip, self.dpsgd_noise, "dpsgd"),
        ):
            check_noise(noise)
            if clip is not None:
                check_clip(clip)
            elif noise > 0:
                raise ConfigError(f"{name}_noise needs {name}_clip (the per-sample bound the noise is scaled to)")

    @property
    def protects_activations(self) -> bool:
        return self.activation_clip is not None

    @property
    def dpsgd(self) -> bool:
        return self.dpsgd_clip is not None

    @property
    def active(self) -> bool:
        return self.protects_activations or self.dpsgd

    def seeded(self, seed: int) -> ClientPrivacy:
        """The same settings with the device's own noise seed."""
        return replace(self, noise_seed=seed)

    def generator(self) -> torch.Generator:
        """A fresh generator for the device's noise: from `noise_seed`, or from system entropy without one."""
        generator = torch.Generator()
        if self.noise_seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.noise_seed)
        return generator
