"""fleettune: fine-tune language models across fleets of IoT devices without moving their data."""

from fleettune.errors import FleettuneError, InputError

__version__ = "0.1.0"

__all__ = ["FleettuneError", "InputError", "__version__"]
