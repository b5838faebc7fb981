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
