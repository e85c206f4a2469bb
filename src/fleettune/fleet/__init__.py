"""Fleets of devices: hardware profiles, links and fleet files."""

from fleettune.fleet.cost import compute_s, downlink_s, energy_j, measure_switch_s, transfer_s, uplink_s
from fleettune.fleet.files import Fleet, load_fleet, parse_fleet, shipped_fleets
from fleettune.fleet.generate import generate_fleet, parse_generated
from fleettune.fleet.profiles import CATALOG, Device, Hardware, Link, hardware

__all__ = [
    "CATALOG",
    "Device",
    "Fleet",
    "Hardware",
    "Link",
    "compute_s",
    "downlink_s",
    "energy_j",
    "generate_fleet",
    "hardware",
    "load_fleet",
    "measure_switch_s",
    "parse_fleet",
    "parse_generated",
    "shipped_fleets",
    "transfer_s",
    "uplink_s",
]
