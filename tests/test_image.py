"""Measurements (PCR0/1/2) of enclave images and the process backend's image folders."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nitronb.errors import ImageBuildError, UnsafeNameError
from nitronb.enclave.image import _context_tar, _dockerfile_cmd, launcher_command
from nitronb.enclave.measure import (Measurements, canonical_data, default_launcher_files,
                                     measure_build_context, pcr, tree_files)
from nitronb.enclave.process_image import prepare_process_image, verify_process_image

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "enclave_image"
BASE = "localhost/nitronb-python-base"


@pytest.fixture
def launcher(tmp_path) -> dict[str, Path]:
    folder = tmp_path / "launcher-src"
    folder.mkdir()
    (folder / "launcher.py").write_text("print('launch')\n")
    (folder / "nsm.py").write_text("NSM = 1\n")
    return {"nitronb/enclave_os/launcher.py": folder / "launcher.py",
            "nitronb/enclave_os/nsm.py": folder / "nsm.py"}


def copy_with_other_metadata(src: Path, dst: Path) -> Path:
    """Copy ``src`` file by file in reverse order, with other times and group/other modes."""
    files = sorted((p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts),
                   reverse=True)
    for i, path in enumerate(files):
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
        mode = 0o700 if path.stat().st_mode & stat.S_IXUSR else 0o600
        os.chmod(target, mode)
        os.utime(target, (1_000_000 + i, 2_000_000 + i))
    (dst / "__pycache__").mkdir(exist_ok=True)
    (dst / "__pycache__" / "start.cpython-311.pyc").write_bytes(os.urandom(32))
    return dst


def test_pcr_is_one_extend_of_a_zero_register():
    data = b"enclave image"
    expected = hashlib.sha384(b"\0" * 48 + hashlib.sha384(data).digest()).hexdigest()
    assert pcr(data) == expected
    assert len(expected) == 96


def test_canonical_data_layout(tmp_path):
    (tmp_path / "b.py").write_bytes(b"B")
    (tmp_path / "a.sh").write_bytes(b"A")
    os.chmod(tmp_path / "a.sh", 0o750)
    data = canonical_data("application", tree_files(tmp_path), {"base_image": "img:1"})
    sha = lambda b: hashlib.sha384(b).hexdigest()  # noqa: E731
    assert data == (b"nitronb-measure-v1\0application\x003\n"
                    b"extra\0base_image\0img:1\n"
                    + f"file\0a.sh\x00755\0{sha(b'A')}\n".encode()
                    + f"file\0b.py\x00644\0{sha(b'B')}\n".encode())


def test_golden_measurements(tmp_path):
    """Fixed inputs give these PCRs on every machine: changing the format changes them."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "Dockerfile").write_text("FROM base\n")
    (app / "start.py").write_text("print('hi')\n")
    lib = tmp_path / "l.py"
    lib.write_text("x = 1\n")
    m = measure_build_context(app, {"nitronb/enclave/launcher.py": lib}, "base:1",
                              launcher_module="nitronb.enclave.launcher")
    assert m.as_dict() == {
        "hash_algorithm": "Sha384",
        "pcr0": GOLDEN["pcr0"], "pcr1": GOLDEN["pcr1"], "pcr2": GOLDEN["pcr2"],
    }


GOLDEN = {
    "pcr0": ("b30d96779ee87c70f800f6aff8c06e552000fd208ce6cac6"
             "34c284ed52d6e50216f1a0524a031c64d5c8f936afd59f8a"),
    "pcr1": ("2a859f4f57e46af20354c7d00a99e9619f2bac81c9a74454"
             "c41a82174b50f9866ac7a4a7ef157063ff6614cbab9776fd"),
    "pcr2": ("586eb506866168c4bea514fb55c365364057044c8c3ff41a"
             "fdbbee1e81720b61462b1a633ddc426f597d1991fa12a570"),
}


def test_same_inputs_same_pcrs_wherever_they_are(tmp_path, launcher):
    first = measure_build_context(APP_DIR, launcher, BASE)
    copy = copy_with_other_metadata(APP_DIR, tmp_path / "elsewhere" / "app")
    moved = {name: copy_with_other_metadata(path.parent, tmp_path / "l2") / path.name
             for name, path in launcher.items()}
    assert measure_build_context(copy, moved, BASE) == first
    for value in (first.pcr0, first.pcr1, first.pcr2):
        assert len(value) == 96 and value == value.lower()
    assert len({first.pcr0, first.pcr1, first.pcr2}) == 3


def test_one_byte_of_the_app_changes_pcr2_and_pcr0_only(tmp_path, launcher):
    before = measure_build_context(APP_DIR, launcher, BASE)
    copy = copy_with_other_metadata(APP_DIR, tmp_path / "app")
    text = bytearray((copy / "describe.py").read_bytes())
    text[-2] ^= 0x01
    (copy / "describe.py").write_bytes(bytes(text))
    after = measure_build_context(copy, launcher, BASE)
    assert after.pcr1 == before.pcr1
    assert after.pcr2 != before.pcr2 and after.pcr0 != before.pcr0


def test_launcher_change_changes_pcr1_and_pcr0_only(launcher):
    before = measure_build_context(APP_DIR, launcher, BASE)
    launcher["nitronb/enclave_os/nsm.py"].write_text("NSM = 2\n")
    after = measure_build_context(APP_DIR, launcher, BASE)
    assert after.pcr2 == before.pcr2
    assert after.pcr1 != before.pcr1 and after.pcr0 != before.pcr0
    other_module = measure_build_context(APP_DIR, launcher, BASE, launcher_module="x.launcher")
    assert other_module.pcr1 != after.pcr1


def test_base_image_names_and_modes_are_measured(tmp_path, launcher):
    before = measure_build_context(APP_DIR, launcher, BASE)
    assert measure_build_context(APP_DIR, launcher, "python:3.11-slim").pcr2 != before.pcr2
    copy = copy_with_other_metadata(APP_DIR, tmp_path / "app")
    os.chmod(copy / "start.py", 0o755)
    assert measure_build_context(copy, launcher, BASE).pcr2 != before.pcr2
    os.chmod(copy / "start.py", 0o644)
    (copy / "start.py").rename(copy / "start2.py")
    assert measure_build_context(copy, launcher, BASE).pcr2 != before.pcr2


def test_symlinks_and_unsafe_paths_are_refused(tmp_path, launcher):
    app = copy_with_other_metadata(APP_DIR, tmp_path / "app")
    (app / "link.py").symlink_to(app / "start.py")
    with pytest.raises(ImageBuildError, match="symbolic link"):
        measure_build_context(app, launcher, BASE)
    with pytest.raises(UnsafeNameError):
        measure_build_context(APP_DIR, {"../escape.py": launcher["nitronb/enclave_os/nsm.py"]}, BASE)
    with pytest.raises(ImageBuildError, match="base image"):
        measure_build_context(APP_DIR, launcher, "")
    with pytest.raises(ImageBuildError, match="not a folder"):
        measure_build_context(tmp_path / "missing", launcher, BASE)


def test_measurements_round_trip_through_records_and_labels(launcher):
    m = measure_build_context(APP_DIR, launcher, BASE)
    assert Measurements.from_dict(m.as_dict()) == m
    assert Measurements.from_dict(m.as_labels()) == m
    assert json.loads(json.dumps(m.as_dict()))["hash_algorithm"] == "Sha384"
    assert m.pcr_bytes()[2] == bytes.fromhex(m.pcr2) and len(m.pcr_bytes()[0]) == 48
    with pytest.raises(ImageBuildError, match="pcr1"):
        Measurements.from_dict({**m.as_dict(), "pcr1": "00"})


def test_default_launcher_files_are_the_enclave_package(tmp_path):
    package = tmp_path / "nitronb"
    package.mkdir()
    (package / "nsm.py").write_text("")
    with pytest.raises(ImageBuildError, match="no launcher"):
        default_launcher_files(package, fallback=())
    assert default_launcher_files(package) == {"nitronb/nsm.py": package / "nsm.py"}
    (package / "enclave_os" / "__pycache__").mkdir(parents=True)
    (package / "enclave_os" / "__init__.py").write_text("")
    (package / "enclave_os" / "launcher.py").write_text("")
    (package / "enclave_os" / "__pycache__" / "launcher.cpython-311.pyc").write_text("")
    assert sorted(default_launcher_files(package)) == ["nitronb/enclave_os/__init__.py",
                                                       "nitronb/enclave_os/launcher.py"]


def test_build_context_tar_is_deterministic(tmp_path):
    copy = copy_with_other_metadata(APP_DIR, tmp_path / "app")
    one = _context_tar(tree_files(APP_DIR)).read()
    two = _context_tar(tree_files(copy)).read()
    assert one == two


def test_launcher_entrypoint_takes_the_app_command_as_arguments(tmp_path):
    pkg = tmp_path / "root" / "demo"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "launcher.py").write_text("import sys\nprint(sys.argv[1:])\n")
    argv = launcher_command("demo.launcher", str(tmp_path / "root"))
    done = subprocess.run([sys.executable, *argv[1:], "python3", "/app/start.py"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['python3', '/app/start.py']"


# --- process backend -----------------------------------------------------------------------


def test_process_image_folder_holds_exactly_what_was_measured(tmp_path, launcher):
    image = prepare_process_image(APP_DIR, launcher, BASE, workspace=tmp_path / "ws")
    expected = measure_build_context(APP_DIR, launcher, BASE)
    folder = Path(image.reference)
    assert image.backend == "process" and image.measurements == expected
    assert folder == tmp_path / "ws" / "images" / expected.pcr0[:16]
    assert (folder / "app" / "describe.py").read_bytes() == (APP_DIR / "describe.py").read_bytes()
    assert (folder / "launcher" / "nitronb" / "enclave_os" / "launcher.py").is_file()
    assert stat.S_IMODE((folder / "app" / "start.py").stat().st_mode) == 0o444
    assert image.command == ("python3", "/app/start.py")
    assert json.loads((folder / "image.json").read_text())["measurements"] == expected.as_dict()
    # idempotent: the same inputs give the same folder
    assert prepare_process_image(APP_DIR, launcher, BASE, workspace=tmp_path / "ws") == image


def test_altered_process_image_is_detected_and_rebuilt(tmp_path, launcher):
    image = prepare_process_image(APP_DIR, launcher, BASE, workspace=tmp_path / "ws")
    target = Path(image.reference) / "app" / "describe.py"
    os.chmod(target, 0o644)
    target.write_text("print('something else')\n")
    os.chmod(target, 0o444)
    with pytest.raises(ImageBuildError, match="altered"):
        verify_process_image(image.reference)
    again = prepare_process_image(APP_DIR, launcher, BASE, workspace=tmp_path / "ws")
    assert again.measurements == image.measurements
    assert target.read_bytes() == (APP_DIR / "describe.py").read_bytes()


def test_dockerfile_cmd_is_read_from_exec_form(tmp_path):
    (tmp_path / "Dockerfile").write_text('FROM x\nCMD ["a"]\ncmd ["python3", "run.py"]\n')
    assert _dockerfile_cmd({"Dockerfile": tmp_path / "Dockerfile"}) == ["python3", "run.py"]


NESTED = {"Dockerfile": b"FROM base\n", "start.py": b"print(1)\n", "B.py": b"B",
          "a.py": b"a", "a-b/x.txt": b"x", "a/b/c/deep.py": b"deep", "a/b/z.py": b"z",
          "a/\u00e9t\u00e9.csv": b"e", "a/b.txt": b"b", "z/a/b/c/d/e.json": b"{}"}


def _tree(root: Path, order) -> Path:
    for name in order:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(NESTED[name])
    return root


@pytest.fixture
def listed_as_created(tmp_path):
    """A folder whose listing order follows creation order where the machine has one (tmpfs
    lists the newest entry first), else ``tmp_path``."""
    import shutil
    import tempfile

    if not os.access("/dev/shm", os.W_OK):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="nitronb-measure-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def test_pcrs_of_a_nested_app_folder_do_not_depend_on_creation_or_listing_order(
        tmp_path, listed_as_created, launcher):
    first = _tree(listed_as_created / "first", list(NESTED))
    again = _tree(listed_as_created / "again", list(reversed(NESTED)))
    assert sorted(os.listdir(first)) == sorted(os.listdir(again))
    files = tree_files(first)
    assert canonical_data("application", files) == \
        canonical_data("application", dict(reversed(list(files.items()))))
    assert tree_files(first, prefix="app/").keys() == tree_files(again, prefix="app/").keys()
    one = measure_build_context(first, launcher, "img:1")
    two = measure_build_context(again, launcher, "img:1")
    assert one == two
    # the nesting is measured: the same bytes one folder up are another application
    moved = _tree(tmp_path / "moved", list(NESTED))
    (moved / "a" / "b" / "c" / "deep.py").rename(moved / "a" / "b" / "deep.py")
    assert measure_build_context(moved, launcher, "img:1").pcr2 != one.pcr2


def test_the_default_app_is_the_checkouts_whatever_the_working_folder(tmp_path, monkeypatch):
    from nitronb.enclave.image import default_app_dir
    from nitronb.notebook.runner import notebooks_dir

    monkeypatch.chdir(tmp_path)
    assert default_app_dir() == APP_DIR
    assert notebooks_dir() == ROOT / "notebooks"
