"""Progress bars: a widget in a notebook, a text bar on a terminal, nothing in a pipe, and
nothing at all for work shorter than the delay."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import nbformat
from nbclient import NotebookClient

from nitronb.notebook.runner import ensure_kernelspec, KERNEL_NAME

BAR = """
from nitronb import _progress
_progress.DELAY = {delay}
with _progress.progress_bar(1000, "upload big.enc") as bar:
    bar.update(1000)
"""


def _on_a_terminal(code: str) -> str:
    """Run ``code`` with stdout and stderr on a pseudo-terminal; what it printed."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 x 100
    try:
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                                stdout=child, stderr=child)
        os.close(child)
        out = b""
        while True:
            try:
                data = os.read(main, 4096)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            out += data
        proc.wait(60)
        return out.decode("utf-8", "replace")
    finally:
        os.close(main)


def test_a_terminal_shows_a_text_bar_once_the_work_lasts():
    shown = _on_a_terminal(BAR.format(delay=0))
    assert "upload big.enc:   0%|" in shown


def test_a_terminal_shows_nothing_for_short_work():
    assert "upload big.enc" not in _on_a_terminal(BAR.format(delay=600))


def test_a_pipe_shows_nothing():
    run = subprocess.run([sys.executable, "-c", BAR.format(delay=0)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and run.stdout == "" and run.stderr == ""


def _executed(code: str):
    ensure_kernelspec()
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(code))
    NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=120).execute()
    return nb.cells[0].outputs


def test_a_notebook_shows_a_widget_bar_and_no_text():
    outputs = _executed(BAR.format(delay=0))
    assert any("application/vnd.jupyter.widget-view+json" in out.get("data", {})
               for out in outputs), outputs
    assert not [out for out in outputs if out.get("output_type") == "stream"], outputs


def test_a_notebook_shows_nothing_for_short_work():
    assert _executed(BAR.format(delay=600)) == []
