"""What secure aggregation costs a client on the wire, and the accounting of `secure_sum`."""

from __future__ import annotations

import numpy as np

from fleettune.privacy.secagg import ROUNDS, FixedPoint, secure_sum

N_CLIENTS = 6
LENGTH = 100_000  # an adapter-sized update
PLAIN_FP32 = 4 * LENGTH


def adapter_updates() -> dict[str, np.ndarray]:
    return {f"dev{i}": np.random.default_rng(i).normal(0, 0.02, LENGTH).astype(np.float32) for i in range(N_CLIENTS)}


def test_client_upload_is_at_most_twice_plain_fp32() -> None:
    result = secure_sum(adapter_updates(), 4, rng=0)
    for client in result.client_sent:
        ratio = result.upload_bytes(client) / PLAIN_FP32
        assert ratio <= 2.0, f"{client}: secure-aggregation upload is {ratio:.4f}x plain fp32 (limit 2x)"
        assert ratio <= 1.01, f"{client}: measured upload ratio {ratio:.4f}x plain fp32, expected about 1.004x"
    sent = result.client_sent["dev0"]
    assert PLAIN_FP32 < sent["masked_input"] <= PLAIN_FP32 + 32  # one 32-bit word per value plus a header
    assert sent["share_keys"] == 5 + 8 + 5 + 4 + (N_CLIENTS - 1) * (5 + 4 + 12 + 2 * 66 + 16)


def test_a_64_bit_ring_doubles_the_upload() -> None:
    codec = FixedPoint.for_clients(N_CLIENTS, clip=1.0, ring_bits=64)
    result = secure_sum(adapter_updates(), 4, codec=codec, rng=0)
    ratio = result.upload_bytes("dev0") / PLAIN_FP32
    assert 2.0 < ratio < 2.01, f"measured 64-bit ring upload ratio {ratio:.4f}x plain fp32"


def test_accounting_balances() -> None:
    result = secure_sum(adapter_updates(), 4, drop_after_sharing={"dev5"}, rng=0)
    for round_name in ROUNDS:
        assert result.server_received[round_name] == sum(s[round_name] for s in result.client_sent.values())
        assert result.server_sent[round_name] == sum(r[round_name] for r in result.client_received.values())
        assert result.server_seconds[round_name] >= 0
    assert result.client_sent["dev5"]["masked_input"] == 0 and result.client_received["dev5"]["share_keys"] == 0
    assert result.server_seconds["unmask"] > 0 and result.client_seconds["dev0"]["masked_input"] > 0
    assert result.server_sent["unmask"] == 0  # the sum stays with the server
