"""Secure aggregation in runs: FedAvg up to the encoding, the protocol's bytes and time, and what it refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fleettune.aggregation.secure import SecAggSpec, SecureSummer, masked_upload_bytes
from fleettune.aggregation.sum_groups import sum_groups
from fleettune.config import build_config
from fleettune.errors import ConfigError
from fleettune.privacy.secagg import secure_sum
from fleettune.privacy.secagg.messages import masked_input_bytes
from fleettune.report import build_report
from fleettune.runner import PreparedRun, execute, prepare
from fleettune.schemes import SchemeResult
from tests.schemes.conftest import tiny_flags

SHORT = {"clients": 3, "rounds": 1, "local_steps": 2}  # one aggregation: its error is the encoding's alone
RESOLUTION = 2.0**-26  # the finest 32-bit encoding of 3 inputs within +-8


@pytest.fixture
def run_reported(tiny_model_dir: Path, tiny_data_dir: Path) -> Any:
    def run(scheme: str, **overrides: Any) -> tuple[PreparedRun, SchemeResult, dict[str, Any]]:
        prepared = prepare(build_config(flags=tiny_flags(tiny_model_dir, tiny_data_dir, scheme, **overrides)))
        result = execute(prepared)
        return prepared, result, build_report(prepared, result, 0.0)

    return run


def _close(secure: SchemeResult, plain: SchemeResult, clients: int = 3) -> None:
    assert secure.adapter is not None and plain.adapter is not None
    for key, value in plain.adapter.items():
        # n inputs each rounded to half a step, then one float32 rounding of the result.
        assert torch.allclose(secure.adapter[key], value, atol=clients * RESOLUTION / 2, rtol=2.0**-23), key


def test_the_protocol_sums_the_finishers_and_aborts_below_the_threshold() -> None:
    summer = SecureSummer(SecAggSpec(threshold=2, value_range=1.0), seed=0)
    parts = {
        "a": {"x": torch.tensor([0.25, -0.5], dtype=torch.float64)},
        "b": {"x": torch.tensor([0.125, 0.75], dtype=torch.float64), "y": torch.tensor([-1.0], dtype=torch.float64)},
    }
    groups = sum_groups({**parts, "c": parts["a"]}, 2)  # y, held by b alone, joins x's group (a, b, c)
    total, traffic = summer.sum(parts, groups, 0)  # c shared its keys, then never sent its input
    assert total is not None
    assert torch.allclose(total["x"], torch.tensor([0.375, 0.25], dtype=torch.float64), atol=1e-9)
    assert torch.allclose(total["y"], torch.tensor([-1.0], dtype=torch.float64), atol=1e-9)
    assert traffic.sent["c"]["share_keys"] > 0 and traffic.received["c"]["unmask"] == 0
    assert all(sent["masked_input"] == 0 for sent in traffic.sent.values())  # counted as the adapter upload
    assert summer.totals.uplink["c"] == sum(traffic.sent["c"].values())
    assert summer.sum({"a": parts["a"]}, groups, 1) == (None, type(traffic)())
    assert (summer.totals.aggregations, summer.totals.aborted) == (1, 1)


def test_fl_equals_plain_fedavg_within_the_encoding_and_pays_the_protocol(run_reported: Any) -> None:
    _, plain, plain_report = run_reported("fl", **SHORT)
    prepared, secure, report = run_reported("fl", **SHORT, privacy__secure_aggregation=True)
    _close(secure, plain)
    section = report["privacy"]["secure_aggregation"]
    assert (section["threshold"], section["resolution"], section["aggregations"]) == (2, RESOLUTION, 1)
    assert (section["aborted"], section["clipped_values"], section["range"]) == (0, 0, 8.0)
    # Every byte is a real protocol message: those of one aggregation over the same clients and vector length.
    ids = [c.id for c in prepared.setup.clients]
    assert plain.adapter is not None
    length = sum(t.numel() for t in plain.adapter.values())
    expected = secure_sum({c: np.zeros(length) for c in ids}, 2, rng=0)
    for client in ids:
        uplink = expected.upload_bytes(client) - expected.client_sent[client]["masked_input"]
        assert section["bytes_per_client"][client] == {"uplink": uplink, "downlink": expected.download_bytes(client)}
    by_kind = report["communication_bytes"]["by_kind"]
    plain_adapter = plain_report["communication_bytes"]["by_kind"]["adapter"]
    # Each masked input goes up in place of the adapter payload, at its own size; the downloads are unchanged.
    masked = sum(expected.client_sent[client]["masked_input"] for client in ids)
    assert by_kind["adapter"] == {"uplink": masked, "downlink": plain_adapter["downlink"]}
    assert by_kind["secagg"]["uplink"] == sum(b["uplink"] for b in section["bytes_per_client"].values()) > 0
    assert by_kind["secagg"]["downlink"] > 0
    assert secure.sim_time_s > plain.sim_time_s and report["privacy"]["dpsgd"] is None


def test_each_key_is_summed_among_the_devices_holding_it() -> None:
    """Nested cuts: layer 0 by all four devices, layer 1 by the two deeper ones, layer 2 by one only (it joins the
    widest group, where the others add zeros). Each device masks what it holds, plus that one padded layer."""
    z = torch.zeros
    holdings = {
        "a": {"l0": z(4)},
        "b": {"l0": z(4)},
        "c": {"l0": z(4), "l1": z(3)},
        "d": {"l0": z(4), "l1": z(3), "l2": z(2)},
    }
    groups = sum_groups(holdings, threshold=3)  # tolerates one dropout in every group
    assert [(g.clients, list(g.template), g.threshold) for g in groups] == [
        (("a", "b", "c", "d"), ["l0", "l2"], 3),
        (("c", "d"), ["l1"], 2),
    ]
    spec = SecAggSpec(threshold=3, value_range=1.0)
    header = {c: masked_input_bytes(c, 0, 32) for c in holdings}  # tag, sender, ring size, length
    sizes = {c: masked_upload_bytes(spec, c, groups) for c in holdings}
    assert sizes == {
        "a": header["a"] + 4 * 6,
        "b": header["b"] + 4 * 6,
        "c": 2 * header["c"] + 4 * (6 + 3),
        "d": 2 * header["d"] + 4 * (6 + 3),
    }


@pytest.mark.parametrize("scheme", ["splitfed", "mesfl"])
def test_split_schemes_sum_the_client_parts_securely(scheme: str, run_reported: Any) -> None:
    short = {**SHORT, "local_steps": 1}
    _, plain, _ = run_reported(scheme, **short)
    _, secure, report = run_reported(scheme, **short, privacy__secure_aggregation=True)
    _close(secure, plain)
    assert report["communication_bytes"]["by_kind"]["secagg"]["uplink"] > 0
    assert any(e["activity"] == "secure-aggregation" for e in report["timeline"])
    assert report["privacy"]["secure_aggregation"]["aggregations"] == 1


def test_dp_noise_is_added_to_the_securely_summed_clipped_updates(run_reported: Any) -> None:
    dp = {"privacy__dp_clip": 0.05, "privacy__dp_noise": 0.5}
    _, plain, _ = run_reported("fl", **SHORT, **dp)
    _, secure, _ = run_reported("fl", **SHORT, **dp, privacy__secure_aggregation=True)
    _close(secure, plain)  # the same noise, drawn in the same order
    assert [h.epsilon for h in secure.history] == [h.epsilon for h in plain.history] != [None]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"scheme": "sl"}, "privacy.secure_aggregation"),
        ({"scheme": "cpsl"}, "privacy.secure_aggregation"),
        ({"security.aggregator": "krum"}, "privacy.secure_aggregation: .* krum"),
        ({"security.aggregator": "median"}, "privacy.secure_aggregation: .* median"),
        ({"compression.updates": "int8"}, "privacy.secure_aggregation"),
        ({"scheme": "mesfl", "privacy.dp_clip": 1.0}, "privacy.secure_aggregation"),
        ({"privacy.secagg_threshold": 7}, "privacy.secagg_threshold: 7 exceeds the 6 clients"),
        ({"privacy.secagg_threshold": 3}, "privacy.secagg_threshold: 3 is no strict majority of 6"),
        ({"privacy.secagg_threshold": 1}, "privacy.secagg_threshold"),
        ({"privacy.secure_aggregation": False, "privacy.secagg_threshold": 4}, "privacy.secagg_threshold"),
        ({"privacy.secagg_range": 0.0}, "privacy.secagg_range"),
        ({"privacy.secagg_range": 1e12}, "privacy.secagg_range"),
        ({"client_fraction": 0.1}, "privacy.secure_aggregation: needs at least 2 clients"),
    ],
)
def test_bad_secure_aggregation_settings_stop_naming_the_field(
    overrides: dict[str, object], needle: str, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    flags = {**tiny_flags(tiny_model_dir, tiny_data_dir, "fl"), "privacy.secure_aggregation": True, **overrides}
    with pytest.raises(ConfigError, match=needle) as caught:
        prepare(build_config(flags=flags))
    assert "\n" not in str(caught.value)
