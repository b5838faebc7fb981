"""figure_files: a regenerated figure replaces the committed file only when it shows something else."""
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from procrustes.results import figure_files, plots


def _line_pdf(top: float) -> bytes:
    """A PDF of one line from (0, 0) to (1, top) on fixed axes: moving `top` by 1e-8 moves the printed end point
    by a few millionths of a point, by 1e-3 by about a third of a point."""
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, top])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 2)
    buf = io.BytesIO()
    fig.savefig(buf, format="pdf", metadata={"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None})
    plt.close(fig)
    return buf.getvalue()


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="png")
    return buf.getvalue()


def test_pdfs_that_differ_only_in_rounding_noise_are_the_same_figure():
    a, noisy, moved = _line_pdf(1.0), _line_pdf(1.0 + 1e-8), _line_pdf(1.001)
    assert a != noisy  # the noise reaches the printed digits, so the comparison below is not between equal bytes
    assert figure_files.same_pdf(a, noisy)
    assert not figure_files.same_pdf(a, noisy, tolerance=0.0)
    assert not figure_files.same_pdf(a, moved)
    assert not figure_files.same_pdf(b"%PDF-1.4 garbage stream\nnot zlib\nendstream", a)


def test_pngs_within_one_level_are_the_same_figure():
    base = np.full((8, 8, 3), 100, dtype=np.uint8)
    near, far, wider = base.copy(), base.copy(), np.full((8, 9, 3), 100, dtype=np.uint8)
    near[3, 3, 0] = 101
    far[3, 3, 0] = 140
    assert figure_files.same_png(_png(base), _png(near))
    assert not figure_files.same_png(_png(base), _png(far))
    assert not figure_files.same_png(_png(base), _png(wider))
    assert not figure_files.same_png(b"not a png", _png(base))


def test_a_file_is_rewritten_only_when_its_figure_changed(tmp_path):
    path = tmp_path / "f.pdf"
    a, noisy, moved = _line_pdf(1.0), _line_pdf(1.0 + 1e-8), _line_pdf(1.001)
    assert figure_files.write_figure_file(path, a) and path.read_bytes() == a
    assert not figure_files.write_figure_file(path, noisy) and path.read_bytes() == a
    assert figure_files.write_figure_file(path, moved) and path.read_bytes() == moved
    path.write_bytes(b"damaged")
    assert figure_files.write_figure_file(path, a) and path.read_bytes() == a
    assert [p.name for p in tmp_path.iterdir()] == ["f.pdf"]  # no temporary file left behind


def test_save_figure_keeps_a_pdf_that_only_another_cpu_would_print_differently(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    png, pdf = plots.save_figure(fig, "g", tmp_path)
    first = pdf.read_bytes()
    ax.lines[0].set_ydata([0, 1 + 1e-8])
    (tmp_path / "noisy").mkdir()
    assert plots.save_figure(fig, "g", tmp_path / "noisy")[1].read_bytes() != first  # the noise is printed
    plots.save_figure(fig, "g", tmp_path)
    assert pdf.read_bytes() == first
    ax.lines[0].set_ydata([0, 0.5])
    plots.save_figure(fig, "g", tmp_path)
    assert pdf.read_bytes() != first and png.exists()
    plt.close(fig)


def _text_pdf(title: str) -> bytes:
    """A PDF with embedded TrueType text (pdf.fonttype 42, as the committed figures): its font program is a
    subset made by fontTools on the machine that draws it."""
    with matplotlib.rc_context({"pdf.fonttype": 42}):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.set_title(title)
        buf = io.BytesIO()
        fig.savefig(buf, format="pdf", metadata={"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None})
        plt.close(fig)
    return buf.getvalue()


def test_another_font_subsetter_draws_the_same_figure():
    """Another fontTools writes other bytes for the same glyphs (a name table with the licence, other sizes):
    the figure is the same. Other text is another figure."""
    import re
    import zlib

    a = _text_pdf("minority classes")
    fonts = set(re.findall(rb"/FontFile2 (\d+) 0 R", a))
    assert fonts, "the test PDF must embed a TrueType font program"
    b = a
    for n in fonts:
        m = re.search(rb"(?<!\d)" + n + rb" 0 obj\s*<<(.*?)>>\s*stream\r?\n(.*?)\r?\nendstream", b, re.S)
        other = zlib.compress(zlib.decompress(m.group(2)) + b"licence text of another subsetter")
        head = re.sub(rb"/Length1 \d+", b"/Length1 99999", m.group(1))
        b = b[:m.start(1)] + head + b[m.end(1):m.start(2)] + other + b[m.end(2):]
    assert b != a
    assert figure_files.same_pdf(a, b)
    assert not figure_files.same_pdf(a, _text_pdf("majority classes"))


def test_a_flate_stream_ending_in_a_carriage_return_is_read_whole():
    """The stream pattern ends the data at an optional "\\r" and "\\n" before endstream, so compressed data whose last byte is 13
    lost it and the PDF could not be compared at all (every make figures rewrote it)."""
    import zlib

    def pdf(payload: bytes, cut: int = 0) -> bytes:
        z = zlib.compress(payload)
        z = z[:len(z) - cut]
        head = b"%%PDF-1.4\n1 0 obj\n<< /Filter /FlateDecode /Length %d >>\nstream\n" % len(z)
        return head + z + b"\nendstream\nendobj\n"  # "\nendstream", as matplotlib writes it

    payloads = (b"%d 0 m %d 1 l S" % (i % 997, i) for i in range(100000))  # adler32's low byte: all 256 values
    cr = [p for p in payloads if zlib.compress(p)[-1] == 13][:2]
    assert len(cr) == 2
    assert figure_files.same_pdf(pdf(cr[0]), pdf(cr[0]))
    assert not figure_files.same_pdf(pdf(cr[0]), pdf(cr[1]))
    assert not figure_files.same_pdf(pdf(cr[0], cut=6), pdf(cr[0]))  # truncated: a damaged file is never the same
