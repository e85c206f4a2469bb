"""A small length-prefixed binary format: a writer that builds message bytes and a reader that refuses bad ones.

Layout of every message: magic b"FSA", version byte, kind byte, then the fields in order. Integers are
big-endian; ids are UTF-8 with a 1-byte length; opaque blobs carry a 4-byte length; lists a 4-byte count.
"""

from __future__ import annotations

from fleettune.privacy.secagg.errors import SecAggError

MAGIC = b"FSA"
VERSION = 1


class Writer:
    """Appends fields to a message body."""

    def __init__(self, kind: int) -> None:
        self._parts: list[bytes] = [MAGIC, bytes([VERSION, kind])]

    def uint(self, value: int, size: int) -> Writer:
        self._parts.append(value.to_bytes(size, "big"))
        return self

    def fixed(self, data: bytes, size: int) -> Writer:
        if len(data) != size:
            raise ValueError(f"field must be {size} bytes, got {len(data)}")
        self._parts.append(data)
        return self

    def text(self, value: str) -> Writer:
        raw = value.encode()
        if not 0 < len(raw) < 256:
            raise ValueError(f"id {value!r} must be 1 to 255 bytes of UTF-8")
        self._parts.append(bytes([len(raw)]) + raw)
        return self

    def short_blob(self, data: bytes) -> Writer:
        if len(data) > 255:
            raise ValueError(f"short field must be at most 255 bytes, got {len(data)}")
        self._parts.append(bytes([len(data)]) + data)
        return self

    def blob(self, data: bytes) -> Writer:
        self._parts.append(len(data).to_bytes(4, "big"))
        self._parts.append(data)
        return self

    def build(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads fields back; any truncation, trailing byte or wrong header is a SecAggError naming the message."""

    def __init__(self, data: bytes, kind: int, name: str, kind_names: dict[int, str]) -> None:
        self._view = memoryview(data)
        self._pos = 0
        self._name = name
        if len(data) < len(MAGIC) + 2 or bytes(self._view[: len(MAGIC)]) != MAGIC:
            raise SecAggError(f"not a secure-aggregation message (no {MAGIC!r} header); expected {name}")
        version, got = data[len(MAGIC)], data[len(MAGIC) + 1]
        if version != VERSION:
            raise SecAggError(f"unsupported message version {version}; expected {VERSION}")
        if got != kind:
            raise SecAggError(f"expected a {name} message, got {kind_names.get(got, f'unknown kind {got}')}")
        self._pos = len(MAGIC) + 2

    def _take(self, size: int) -> memoryview:
        if self._pos + size > len(self._view):
            raise SecAggError(f"malformed {self._name}: truncated at byte {self._pos} (needed {size} more)")
        chunk = self._view[self._pos : self._pos + size]
        self._pos += size
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self._take(size), "big")

    def fixed(self, size: int) -> bytes:
        return bytes(self._take(size))

    def raw(self, size: int) -> memoryview:
        return self._take(size)

    def text(self) -> str:
        size = self.uint(1)
        if size == 0:
            raise SecAggError(f"malformed {self._name}: empty id")
        try:
            return bytes(self._take(size)).decode()
        except UnicodeDecodeError:
            raise SecAggError(f"malformed {self._name}: an id is not UTF-8") from None

    def short_blob(self) -> bytes:
        return bytes(self._take(self.uint(1)))

    def blob(self) -> bytes:
        return bytes(self._take(self.uint(4)))

    def count(self) -> int:
        """A list length; one larger than the bytes left is refused at once (every entry takes a byte or more)."""
        value = self.uint(4)
        if value > len(self._view) - self._pos:
            raise SecAggError(f"malformed {self._name}: list of {value} entries in {len(self._view) - self._pos} bytes")
        return value

    def finish(self) -> None:
        if self._pos != len(self._view):
            raise SecAggError(f"malformed {self._name}: {len(self._view) - self._pos} trailing bytes")
