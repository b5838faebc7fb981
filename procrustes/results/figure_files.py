"""Writing figure files so that regenerating an unchanged figure leaves the committed file alone, on any CPU.

matplotlib prints PDF coordinates with 6 decimals, and numpy's log (log-scale axes) may differ in the last bit
between CPUs, whose SIMD code paths differ. A coordinate that lies on a rounding tie then prints as ...312 on
one CPU and ...313 on another, and `make figures` rewrites a PDF nobody changed. So a new file replaces the old
one only when the two differ by more than that noise: PDF numbers by more than `PDF_TOLERANCE`, PNG pixels by
more than `PNG_TOLERANCE`. Files are written atomically."""
from __future__ import annotations

import io
import re
import zlib
from pathlib import Path

from ..training.store import atomic_write_bytes

PDF_TOLERANCE = 1e-5  # points (1/72 inch): ten times the last digit matplotlib prints; any real change is larger
PNG_TOLERANCE = 1  # of 255 per channel: one level, an antialiased edge moved by a millionth of a point

_STREAM = re.compile(rb"stream\r?\n(.*?)\r?\nendstream", re.S)
_LENGTH = re.compile(rb"/Length[123]? \d+( 0 R)?")  # /Length1-3: a font program's own sizes
_LENGTH_REF = re.compile(rb"/Length (\d+) 0 R")
_FONT_REF = re.compile(rb"/(?:FontFile[23]?|CIDToGIDMap) (\d+) 0 R")
_OBJ = re.compile(rb"(?<!\d)(\d+) 0 obj\b")


def _font_objects(data: bytes) -> set[bytes]:
    """Numbers of the objects that hold an embedded font program or a CID-to-glyph map: their bytes are the font
    subsetter's (fontTools' version decides them), not the figure's."""
    return set(_FONT_REF.findall(data))


def _inflate(body: bytes) -> bytes:
    """A Flate stream's content. `_STREAM` ends the data at its "\r\n" or "\n" before endstream, so compressed
    data that happens to end in a byte 13 ("\r") loses it there: it is put back, and bytes after the end of the
    compressed data are ignored. An incomplete stream (a damaged file) raises zlib.error."""
    d = zlib.decompressobj()
    out = d.decompress(body + b"\r")
    if not d.eof:
        raise zlib.error("incomplete or truncated stream")
    return out


def _pdf_tokens(data: bytes) -> list[bytes]:
    """The PDF's content as whitespace-separated tokens, with every Flate stream decompressed and what depends on
    the compressed sizes (stream lengths, the cross-reference table, byte offsets) left out. Embedded font
    programs count by the fonts they name (their /FontName, /BaseFont and widths stay), not by their bytes, which
    change with the font subsetter of the machine that drew the figure."""
    parts, at = [], 0
    fonts = _font_objects(data)
    for m in _STREAM.finditer(data):
        head = data[at:m.start()]
        body = m.group(1)
        obj = _OBJ.findall(head)
        if obj and obj[-1] in fonts:
            body = b"<font-program>"
        elif b"/FlateDecode" in head[head.rfind(b" obj"):]:  # the stream's own dictionary
            body = _inflate(body)
        parts += [head, b" stream ", body, b" endstream"]
        at = m.end()
    text = _LENGTH.sub(b"", b"".join(parts) + data[at:])
    for n in set(_LENGTH_REF.findall(data)):  # objects that only hold a stream's length
        text = re.sub(rb"(?<!\d)" + n + rb" 0 obj\s*\d+\s*endobj", b"", text)
    xref = text.rfind(b"\nxref")
    return (text[:xref] if xref >= 0 else text).split()


def _number(token: bytes) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def same_pdf(old: bytes, new: bytes, tolerance: float = PDF_TOLERANCE) -> bool:
    """True when two PDFs have the same content up to numbers that differ by at most `tolerance`."""
    try:
        a, b = _pdf_tokens(old), _pdf_tokens(new)
    except zlib.error:  # a damaged old file is never "the same"
        return False
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x != y:
            fx, fy = _number(x), _number(y)
            if fx is None or fy is None or abs(fx - fy) > tolerance:
                return False
    return True


def same_png(old: bytes, new: bytes, tolerance: int = PNG_TOLERANCE) -> bool:
    """True when two PNGs have the same size and mode and no pixel differs by more than `tolerance` levels."""
    import numpy as np
    from PIL import Image

    try:
        a, b = Image.open(io.BytesIO(old)), Image.open(io.BytesIO(new))
        if a.size != b.size or a.mode != b.mode:
            return False
        return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max(initial=0)) <= tolerance
    except OSError:  # a damaged old file is never "the same"
        return False


def write_figure_file(path: Path, data: bytes) -> bool:
    """Write `data` to `path` (atomically) unless the file there already shows the same figure; True if written."""
    path = Path(path)
    if path.exists():
        old = path.read_bytes()
        if old == data:
            return False
        same = {".pdf": same_pdf, ".png": same_png}.get(path.suffix.lower())
        if same is not None and same(old, data):
            return False
    atomic_write_bytes(path, data)
    return True
