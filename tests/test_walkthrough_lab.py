"""A trainer's room: `nitronb lab` on a working copy of the notebooks, the `nitronb` kernel the
notebooks run on, and `nitronb sample`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nitronb.errors import NitronbError

from nitronb.notebook.runner import KERNEL_NAME, ensure_kernelspec, notebooks_dir, working_copy


def _nitronb(*args: str, cwd: Path, workspace: Path, timeout: float = 300):
    env = {**os.environ, "NITRONB_WORKSPACE": str(workspace)}
    return subprocess.run([sys.executable, "-m", "nitronb", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_working_copy_copies_once_and_keeps_edits_unless_reset(tmp_path):
    shipped = sorted(p.name for p in notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
    copied, kept = working_copy(tmp_path / "room")
    assert [p.name for p in copied] == shipped and kept == []
    edited = tmp_path / "room" / "01_generate_keys.ipynb"
    edited.write_text("{}", encoding="utf-8")
    copied, kept = working_copy(tmp_path / "room")
    assert copied == [] and len(kept) == len(shipped)
    assert edited.read_text(encoding="utf-8") == "{}"
    copied, kept = working_copy(tmp_path / "room", reset=True)
    assert len(copied) == len(shipped)
    assert edited.read_bytes() == (notebooks_dir() / edited.name).read_bytes()


def test_lab_refuses_another_root_folder_before_starting_anything(tmp_path):
    workspace = tmp_path / "ws"
    for args in (["room", "--", "--notebook-dir=/"], ["room", "--", "--ServerApp.root_dir", "/"],
                 ["--", "--notebook-dir", "/"]):
        done = _nitronb("lab", *args, cwd=tmp_path, workspace=workspace)
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("nitronb: error: nitronb lab serves the working copy of "
                                      "the notebooks;")
        assert done.stderr.count("\n") == 1
    assert not (workspace / "local").exists() and not (tmp_path / "room").exists()


def test_lab_serves_a_working_copy_and_passes_jupyter_options_on(tmp_path):
    from nitronb.local import stack as local

    workspace = tmp_path / "ws"
    try:
        done = _nitronb("lab", "room", "--", "--version", cwd=tmp_path, workspace=workspace)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip()[0].isdigit()  # `jupyter lab --version`
        assert f"copied 10 notebooks into {tmp_path / 'room'}" in done.stderr
        done = _nitronb("lab", "room", "--", "--version", cwd=tmp_path, workspace=workspace)
        assert done.returncode == 0, done.stderr
        assert "kept your copies of 10 notebooks" in done.stderr and "--reset" in done.stderr
        # the default room is in the workspace
        done = _nitronb("lab", "--", "--version", cwd=tmp_path, workspace=workspace)
        assert done.returncode == 0 and (workspace / "notebooks" / "00_index.ipynb").is_file()
    finally:
        local.down(workspace)
    helped = _nitronb("lab", "--help", cwd=tmp_path, workspace=workspace)
    assert "<workspace>/notebooks" in helped.stdout


def test_the_kernel_is_this_python():
    folder = ensure_kernelspec()
    spec = json.loads((folder / "kernel.json").read_text(encoding="utf-8"))
    assert folder.name == KERNEL_NAME and spec["argv"][0] == sys.executable
    assert spec["display_name"] == "Python 3 (nitronb)"
    assert ensure_kernelspec() == folder
    done = subprocess.run([sys.executable, "-m", "nitronb", "kernel", "show"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and sys.executable in done.stdout


def test_sample_writes_the_shipped_csv_once(tmp_path):
    from nitronb import sample_path

    done = _nitronb("sample", cwd=tmp_path, workspace=tmp_path / "ws")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "conditions.csv").read_bytes() == sample_path().read_bytes()
    again = _nitronb("sample", cwd=tmp_path, workspace=tmp_path / "ws")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_lab_options_go_anywhere_before_the_double_dash(tmp_path):
    """--reset and --workspace after DIR are nitronb's; an option that is not says in one line
    that jupyter's options go after `--`, before anything is copied or started."""
    from nitronb.local import stack as local

    workspace = tmp_path / "ws"
    for args, stray in ((["--port", "8898"], "--port 8898"),
                        (["room", "--reset", "--no-browser"], "--no-browser")):
        done = _nitronb("lab", *args, cwd=tmp_path, workspace=workspace)
        assert done.returncode == 2
        assert done.stderr == (f"nitronb lab: error: unrecognized arguments: {stray}; options for "
                               f"jupyter lab go after --: nitronb lab [DIR] -- {stray}\n")
    assert not (workspace / "local").exists() and not (tmp_path / "room").exists()
    working_copy(tmp_path / "room")
    edited = tmp_path / "room" / "01_generate_keys.ipynb"
    edited.write_text("{}", encoding="utf-8")
    try:
        done = _nitronb("lab", "room", "--reset", "--workspace", str(tmp_path / "other"), "--",
                        "--version", cwd=tmp_path, workspace=workspace)
        assert done.returncode == 0, done.stderr
        assert f"copied 10 notebooks into {tmp_path / 'room'}" in done.stderr
        assert edited.read_bytes() == (notebooks_dir() / edited.name).read_bytes()
        assert (tmp_path / "other" / "local").is_dir() and not (workspace / "local").exists()
    finally:
        local.down(tmp_path / "other")


def test_stopping_lab_stops_jupyterlab(tmp_path):
    """SIGTERM to `nitronb lab` reaches the JupyterLab it started, and it waits for its end."""
    import signal
    import socket
    import time

    import psutil

    from nitronb.local import stack as local

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workspace = tmp_path / "ws"
    env = {**os.environ, "NITRONB_WORKSPACE": str(workspace),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    lab = subprocess.Popen([sys.executable, "-m", "nitronb", "lab", "room", "--", "--no-browser",
                            f"--port={port}", "--ServerApp.port_retries=0"],
                           cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    jupyter, seen = None, {}
    try:
        deadline = time.monotonic() + 120
        while jupyter is None and time.monotonic() < deadline and lab.poll() is None:
            for child in psutil.Process(lab.pid).children(recursive=True):
                seen[child.pid] = child
                try:
                    if any(c.laddr.port == port for c in child.net_connections(kind="tcp")):
                        jupyter = child
                except psutil.Error:  # a child that ended meanwhile
                    pass
            time.sleep(0.5)
        assert jupyter is not None, "JupyterLab did not start listening"
        lab.send_signal(signal.SIGTERM)
        lab.wait(timeout=60)
        assert not jupyter.is_running(), "JupyterLab outlived nitronb lab"
    finally:
        if lab.poll() is None:
            lab.kill()
        for child in seen.values():  # what this test started, whatever happened
            try:
                child.kill()
            except psutil.Error:
                pass
        local.down(workspace)


def test_the_working_copy_never_writes_through_a_link_nor_into_the_installed_notebooks(tmp_path):
    room = tmp_path / "room"
    room.mkdir()
    victim = tmp_path / "precious.txt"
    victim.write_text("mine", encoding="utf-8")
    (room / "01_generate_keys.ipynb").symlink_to(victim)
    with pytest.raises(NitronbError, match="symbolic link"):
        working_copy(room, reset=True)
    assert victim.read_text(encoding="utf-8") == "mine"
    dangling = tmp_path / "room2"
    dangling.mkdir()
    (dangling / "02_encrypt_input.ipynb").symlink_to(tmp_path / "created-by-lab.ipynb")
    with pytest.raises(NitronbError, match="symbolic link"):
        working_copy(dangling)
    assert not (tmp_path / "created-by-lab.ipynb").exists()
    with pytest.raises(NitronbError, match="installed notebooks"):
        working_copy(notebooks_dir())
    link = tmp_path / "installed"
    link.symlink_to(notebooks_dir())
    with pytest.raises(NitronbError, match="installed notebooks"):
        working_copy(link, reset=True)
