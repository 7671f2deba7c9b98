"""Exposition text kept as immutable pieces, each compressed at most once, and a scrape's
body assembled from them: as text, or as one gzip member without compressing it again."""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

OPENMETRICS_EOF = b"# EOF\n"
# Level 1 compresses the repetitive exposition text nearly as well as the default 6, in
# half the time.
GZIP_LEVEL = 1
_RAW_DEFLATE = -15
"""wbits for a deflate stream with no header or trailer: Exposition.gzip writes those."""
# ID1 ID2, deflate, no flags, no modification time, no extra flags, OS unknown.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_FINAL_BLOCK = b"\x03\x00"
"""An empty final block of fixed codes: ends a deflate stream left open by sync flushes."""


class Piece:
    """A run of exposition text and, once asked for, its compressed form: a raw deflate
    stream of its own that ends on a byte boundary without closing the stream, so the
    compressed pieces of a body concatenate into one gzip member (see Exposition.gzip).

    Compression happens in a worker thread. Two threads may compress the same piece at
    once; both get the same bytes, so whichever stores its result last changes nothing.
    """

    __slots__ = ("_compressed", "parts")

    def __init__(self, parts: tuple[bytes, ...]) -> None:
        self.parts = parts
        self._compressed: _Compressed | None = None

    def raw(self) -> bytes:
        return b"".join(self.parts)

    @property
    def is_compressed(self) -> bool:
        return self._compressed is not None

    def compressed(self) -> _Compressed:
        compressed = self._compressed
        if compressed is None:
            raw = self.raw()
            compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _RAW_DEFLATE)
            deflated = compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)
            compressed = self._compressed = _Compressed(deflated, zlib.crc32(raw), len(raw))
        return compressed


class _Compressed(NamedTuple):
    deflated: bytes
    crc: int
    size: int


@dataclass(frozen=True)
class Exposition:
    """What one scrape serves, fixed on the event loop; reading it (as text or gzipped)
    touches only immutable text, so it may happen in any thread."""

    pieces: tuple[Piece, ...]

    def chunks(self) -> Iterator[bytes]:
        """The text, piece by piece (never joined: at 10,000 endpoints that is 30 MB)."""
        for piece in self.pieces:
            raw = piece.raw()
            if raw:
                yield raw

    def gzip(self) -> bytes:
        """The text as one gzip member (RFC 1952): a header, the pieces' deflate streams one
        after the other, an empty final block, then the CRC-32 and size of the whole text.

        Only pieces not compressed yet (neither by an earlier scrape nor by
        MonitorMetrics.keep_compressed since they changed) are compressed here; the CRC
        of the whole is combined from the pieces' (see _crc32_combine), not computed over
        30 MB again.
        """
        crc = 0
        size = 0
        body = [_GZIP_HEADER]
        for piece in self.pieces:
            compressed = piece.compressed()
            body.append(compressed.deflated)
            crc = _crc32_combine(crc, compressed.crc, compressed.size)
            size += compressed.size
        body.append(_FINAL_BLOCK)
        body.append(struct.pack("<II", crc, size & 0xFFFFFFFF))
        return b"".join(body)


def _load_crc32_combine() -> Callable[[int, int, int], int] | None:
    """zlib's crc32_combine from the libz the zlib module uses, if it can be found.

    PyDLL keeps the GIL during the call: it takes a microsecond, and releasing the GIL
    around each of a few hundred calls would let a busy event loop delay every one of them.
    """
    name = ctypes.util.find_library("z")
    if name is None:
        return None
    try:
        function = ctypes.PyDLL(name).crc32_combine
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_ulong, ctypes.c_ulong, ctypes.c_int64)
    function.restype = ctypes.c_ulong
    return cast(Callable[[int, int, int], int], function)


_libz_crc32_combine = _load_crc32_combine()


def _crc32_combine(crc1: int, crc2: int, size2: int) -> int:
    """The CRC-32 of A + B from A's, B's and B's length: zlib's crc32_combine, which Python's
    zlib module does not expose."""
    if _libz_crc32_combine is not None:
        return _libz_crc32_combine(crc1, crc2, size2)
    return _crc32_combine_python(crc1, crc2, size2)


def _crc32_combine_python(crc1: int, crc2: int, size2: int) -> int:
    """crc32_combine as zlib 1.2.12 computes it: crc1 times x^(8 * size2) modulo the CRC
    polynomial, plus crc2. About 50 times slower than libz's, for where libz is not found."""
    factor = 0x80000000  # x^0 in zlib's reflected bit order
    power = 3  # x^(2^3) = x^8: one byte
    while size2:
        if size2 & 1:
            factor = _multiply_mod_p(_X2N[power & 31], factor)
        size2 >>= 1
        power += 1
    return _multiply_mod_p(factor, crc1) ^ crc2


def _multiply_mod_p(a: int, b: int) -> int:
    """a times b modulo the CRC-32 polynomial, both in zlib's reflected bit order."""
    product = 0
    mask = 0x80000000
    while a:
        if a & mask:
            product ^= b
            a ^= mask
        mask >>= 1
        b = (b >> 1) ^ 0xEDB88320 if b & 1 else b >> 1
    return product


def _powers_of_x() -> tuple[int, ...]:
    """x^(2^n) modulo the CRC-32 polynomial for n = 0..31, as zlib's x2n_table."""
    powers = [0x40000000]  # x^1
    for _ in range(31):
        powers.append(_multiply_mod_p(powers[-1], powers[-1]))
    return tuple(powers)


_X2N = _powers_of_x()


def compress(pieces: Sequence[Piece]) -> None:
    for piece in pieces:
        piece.compressed()
