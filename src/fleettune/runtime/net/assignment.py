"""What the server tells a device when it joins: everything it needs to build its client stage and batches."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from fleettune.errors import InputError
from fleettune.privacy.client import ClientPrivacy


@dataclass(frozen=True)
class Assignment:
    """A device's part in a run. The device loads the named model itself (from its own installation) and
    reads its own data; nothing else about the run is needed to train its stage."""

    scheme: str
    model: str  # catalogue name or model folder, resolved on the device
    index: int  # the device's position in the fleet: it seeds its batch order, as in simulation
    kind: str  # the device's hardware profile in the server's fleet
    tflops: float
    memory_gib: float
    power_w: float
    cut_layer: int
    lora_rank: int
    lora_alpha: float
    lora_dropout: float
    lora_targets: tuple[str, ...] | None
    labels: tuple[str, ...]  # label names in id order: the device maps its raw labels onto them
    numeric_labels: bool
    text_column: str
    label_column: str
    batch_size: int
    max_length: int
    pad_to_max_length: bool
    lr: float
    lr_schedule: str  # fl: devices follow the run's schedule in their local steps
    weight_decay: float
    optimizer: str  # the run's local optimizer (`optimizer`)
    seed: int
    activations: str  # cut codecs and unpadding, as in the run's config
    gradients: str
    unpad: bool
    updates: str  # adapter-update codec
    # What the device applies before anything leaves it (privacy.activation_* and privacy.dpsgd_*). The
    # device draws its own noise: a seed from the server would let the server take the noise off again.
    activation_clip: float | None = None
    activation_noise: float = 0.0
    dpsgd_clip: float | None = None
    dpsgd_noise: float = 0.0

    def privacy(self) -> ClientPrivacy | None:
        settings = ClientPrivacy(self.activation_clip, self.activation_noise, self.dpsgd_clip, self.dpsgd_noise)
        return settings if settings.active else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Assignment:
        try:
            raw = json.loads(text)
            targets = raw.pop("lora_targets")
            labels = raw.pop("labels")
            return cls(**raw, lora_targets=tuple(targets) if targets else None, labels=tuple(labels))
        except (ValueError, TypeError, KeyError) as exc:
            raise InputError(
                f"malformed assignment from the server: {exc}; expected the fields of Assignment"
            ) from None
