"""Fleets of devices: hardware profiles, links and fleet files."""

from fleettune.fleet.files import Fleet, load_fleet, parse_fleet, shipped_fleets
from fleettune.fleet.profiles import CATALOG, Device, Hardware, Link, hardware

__all__ = [
    "CATALOG",
    "Device",
    "Fleet",
    "Hardware",
    "Link",
    "hardware",
    "load_fleet",
    "parse_fleet",
    "shipped_fleets",
]
