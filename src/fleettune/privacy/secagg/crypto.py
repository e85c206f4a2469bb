"""The key agreement, key derivation and authenticated encryption the protocol is built on.

Each client owns two X25519 key pairs: one to agree encryption keys for the shares it sends through the
server, one to agree the seeds of its pairwise masks. HKDF-SHA256 turns an X25519 shared secret into a
32-byte key bound to its purpose, the aggregation and the (ordered) pair of client ids, so keys
of different purposes, aggregations or pairs never coincide. Shares are sealed with AES-256-GCM; the sender
and receiver ids sit in the associated data, so a server that swaps or redirects a ciphertext is caught.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fleettune.privacy.secagg.errors import SecAggError
from fleettune.privacy.secagg.randomness import RandomSource

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SHARE_KEY = b"fleettune-secagg/v1/share-key"
MASK_SEED = b"fleettune-secagg/v1/pair-mask"
SHARE_AD = b"fleettune-secagg/v1/share"


def new_private_key(rng: RandomSource) -> X25519PrivateKey:
    """A fresh X25519 private key drawn from `rng` (X25519 clamps any 32 bytes into a valid scalar)."""
    return X25519PrivateKey.from_private_bytes(rng.token_bytes(KEY_BYTES))


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


def load_private(raw: bytes) -> X25519PrivateKey:
    if len(raw) != KEY_BYTES:
        raise SecAggError(f"an X25519 private key must be {KEY_BYTES} bytes, got {len(raw)}")
    return X25519PrivateKey.from_private_bytes(raw)


def load_public(raw: bytes, pair: str) -> X25519PublicKey:
    if len(raw) != KEY_BYTES:
        raise SecAggError(f"public key for the pair {pair} must be {KEY_BYTES} bytes, got {len(raw)}")
    return X25519PublicKey.from_public_bytes(raw)


def _label(*parts: bytes) -> bytes:
    """Length-prefixed concatenation, so no two different part lists give the same label."""
    return b"".join(len(p).to_bytes(2, "big") + p for p in parts)


def agree(
    private: X25519PrivateKey, peer_public: bytes, purpose: bytes, aggregation_tag: bytes, pair: tuple[str, str]
) -> bytes:
    """A 32-byte key for `purpose` shared by the two clients of `pair`, both sides computing the same value.

    `pair` lists the two ids in the protocol's fixed order (`SecAggConfig.ordered`), so both ends derive
    the same key.
    """
    low, high = pair
    try:
        secret = private.exchange(load_public(peer_public, f"{low}/{high}"))
    except ValueError as exc:  # an all-zero shared secret: the peer key is a small-order point
        raise SecAggError(f"key agreement between {low!r} and {high!r} failed: {exc}") from None
    info = _label(purpose, aggregation_tag, low.encode(), high.encode())
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(secret)


def share_associated_data(aggregation_tag: bytes, sender: str, receiver: str) -> bytes:
    return _label(SHARE_AD, aggregation_tag, sender.encode(), receiver.encode())


def seal(key: bytes, plaintext: bytes, associated: bytes, rng: RandomSource) -> bytes:
    """nonce || AES-GCM ciphertext-and-tag of `plaintext`, authenticating `associated` too."""
    nonce = rng.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes, what: str) -> bytes:
    """The plaintext of `seal`'s output; SecAggError if it was altered, misdirected or sealed with another key."""
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise SecAggError(f"{what}: ciphertext of {len(sealed)} bytes is shorter than nonce and tag")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except InvalidTag:
        raise SecAggError(f"{what}: authentication failed (tampered, misdirected or from a different key)") from None
