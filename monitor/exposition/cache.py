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
        after the other, an empty final block, then the CRC-32 and size of the whole text
        (one member, not one per piece: see the package's design note).

        Only pieces not compressed yet (neither by an earlier scrape nor by
        MonitorMetrics.keep_compressed since they changed) are compressed here.
        """
        compressed = [piece.compressed() for piece in self.pieces]
        size = sum(each.size for each in compressed)
        return b"".join(
            [
                _GZIP_HEADER,
                *(each.deflated for each in compressed),
                _FINAL_BLOCK,
                struct.pack("<II", self._crc32(compressed), size & 0xFFFFFFFF),
            ]
        )

    def _crc32(self, compressed: Sequence[_Compressed]) -> int:
        """The CRC-32 of the whole text: combined from the pieces' with libz's crc32_combine
        (about 1 ms for the 372 pieces of 10,000 endpoints), or, where libz is not found,
        computed over the text again (20 to 45 ms for its 33 MB, with the GIL released)."""
        crc = 0
        if _libz_crc32_combine is None:
            for piece in self.pieces:
                crc = zlib.crc32(piece.raw(), crc)
            return crc
        for each in compressed:
            crc = _libz_crc32_combine(crc, each.crc, each.size)
        return crc


def _load_crc32_combine() -> Callable[[int, int, int], int] | None:
    """zlib's crc32_combine, which Python's zlib module does not expose, from the libz that
    module uses, if it can be found.

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


def compress(pieces: Sequence[Piece]) -> None:
    for piece in pieces:
        piece.compressed()
