"""Tar archives that come from elsewhere (harvest archives, carry files), checked header by header before
`tarfile` reads them.

Why: tarfile reads a PAX extended header or a GNU long name whole into memory, and keeps every member's headers
in its member list, before any check of ours sees the member: a 2.6 MB archive whose PAX header claims 600 MB
took 1.3 GB of memory. Here the archive is streamed (decompressed in chunks), each 512-byte header is read and
its size bounded before a byte of what it announces is read: an extended header or a long name by
MAX_HEADER_BYTES (all of them together by MAX_HEADERS_TOTAL), a file by the caller's cap, the members by their
number, the archive by its decompressed size. Only plain files and folders pass (no links, devices or sparse
files), and no PAX record may change a member's size. Memory stays within a few chunks whatever the archive
says; a refusal is one ValueError line."""
from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path

BLOCK = 512
MAX_HEADER_BYTES = 64 << 10  # one PAX extended header or GNU long name (a 4,096-byte path fits many times)
MAX_HEADERS_TOTAL = 4 << 20  # all of them in one archive (tarfile keeps them for every member)
MAX_ARCHIVE_BYTES = 1 << 30  # decompressed: a harvest archive comes back as at most 16 MiB of compressed JSON
CHUNK = 1 << 20  # what is decompressed at once while skipping a file's content
REGULAR, DIRECTORY = (b"0", b"\0", b"7"), b"5"
EXTENDED = {b"x": "PAX extended header", b"L": "GNU long name", b"K": "GNU long link name"}


def _stream(path: Path, compression: tuple[str, ...]):
    """The archive's decompressed bytes as a file object (read in chunks, never whole); ValueError when its
    compression is not one of `compression` ("gz", "bz2", "xz", "" for none)."""
    with open(path, "rb") as f:
        magic = f.read(6)
    kind = "gz" if magic[:2] == b"\x1f\x8b" else "bz2" if magic[:3] == b"BZh" else "xz" if magic == b"\xfd7zXZ\x00" else ""
    if kind not in compression:
        raise ValueError(f"not a {' or '.join(c or 'plain' for c in compression)} tar archive")
    return {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open, "": open}[kind](path, "rb")


def _number(field: bytes) -> int:
    """A numeric header field: octal digits (NUL or space terminated), or GNU's base-256 form."""
    if field[:1] in (b"\x80", b"\xff"):
        n = int.from_bytes(field[1:], "big")
        return n - (1 << (8 * (len(field) - 1))) if field[:1] == b"\xff" else n
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise ValueError(f"damaged tar header (size field {field!r})") from None


def _checksum_ok(header: bytes) -> bool:
    try:
        stored = _number(header[148:156])
    except ValueError:
        return False
    plain = sum(header[:148]) + 8 * 32 + sum(header[156:])
    signed = sum(b - 256 if b > 127 else b for b in header[:148]) + 8 * 32 + sum(b - 256 if b > 127 else b for b in header[156:])
    return stored in (plain, signed)


def _pax_keys(data: bytes) -> list[str]:
    """The keywords of a PAX extended header's records ("LEN key=value\\n" each); ValueError when it is malformed."""
    keys, at = [], 0
    while at < len(data) and data[at:at + 1] != b"\0":
        space = data.find(b" ", at)
        try:
            length = int(data[at:space])
        except ValueError:
            raise ValueError("damaged PAX extended header") from None
        record = data[space + 1:at + length]
        if length <= 0 or space < 0 or not record.endswith(b"\n") or b"=" not in record:
            raise ValueError("damaged PAX extended header")
        keys.append(record.split(b"=", 1)[0].decode("utf-8", "replace"))
        at += length
    return keys


def _read(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) < n:
        raise ValueError("truncated tar archive")
    return data


def check_tar(path: Path, entry_cap: int, max_members: int, compression: tuple[str, ...] = ("gz",),
              archive_cap: int = MAX_ARCHIVE_BYTES) -> int:
    """Read every header of the tar archive at `path` (streamed) and return its number of members; ValueError (one
    line) at the first header that announces more than its bound (see the module docstring): a file above
    `entry_cap` bytes, an extended header above MAX_HEADER_BYTES, more than `max_members` members, more than
    `archive_cap` bytes in all, a member that is not a plain file or a folder, a bad checksum, a truncation."""
    members, headers_total, total = 0, 0, 0
    with _stream(Path(path), compression) as f:
        while True:
            header = f.read(BLOCK)
            if len(header) == 0 or header == b"\0" * BLOCK:
                return members  # the end-of-archive block (or the end of a stream without one)
            if len(header) < BLOCK:
                raise ValueError("truncated tar archive")
            if not _checksum_ok(header):
                raise ValueError(f"damaged tar header at byte {total} (bad checksum)")
            name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
            kind, size = header[156:157], _number(header[124:136])
            total += BLOCK
            if size < 0:
                raise ValueError(f"{name}: negative size in its tar header")
            blocks = -(-size // BLOCK) * BLOCK
            if kind in EXTENDED or kind == b"g":
                what = EXTENDED.get(kind, "PAX global header")
                if kind == b"g":
                    raise ValueError(f"a {what} (what a harvest never writes)")
                headers_total += size
                if size > MAX_HEADER_BYTES or headers_total > MAX_HEADERS_TOTAL:
                    raise ValueError(f"a {what} of {size:,} bytes (at most {MAX_HEADER_BYTES:,} each, "
                                     f"{MAX_HEADERS_TOTAL:,} in all): refused before it is read")
                data = _read(f, blocks)[:size]
                if kind == b"x":
                    bad = [k for k in _pax_keys(data) if k == "size" or k.startswith("GNU.sparse")]
                    if bad:
                        raise ValueError(f"a PAX extended header with a {bad[0]!r} record (what a harvest never writes)")
                total += blocks
                continue
            members += 1
            if members > max_members:
                raise ValueError(f"more than {max_members} entries")
            if kind == DIRECTORY:
                continue  # tarfile reads no content after a folder's header, whatever its size field says
            if kind not in REGULAR:
                raise ValueError(f"{name}: not a plain file (tar type {kind!r})")
            if size > entry_cap:
                raise ValueError(f"{name}: {size} bytes, more than the {entry_cap} a harvest entry may hold")
            total += blocks
            if total > archive_cap:
                raise ValueError(f"more than {archive_cap:,} bytes once decompressed")
            left = blocks
            while left:
                left -= len(_read(f, min(left, CHUNK)))


__all__ = ["check_tar", "MAX_HEADER_BYTES", "MAX_HEADERS_TOTAL", "MAX_ARCHIVE_BYTES"]
