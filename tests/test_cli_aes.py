"""``nitronb keygen`` and ``nitronb aes`` as a person uses them at a terminal."""

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import threading

import pytest

from nitronb import sample_path
from nitronb.cli import main
from nitronb.keys import fingerprint


def nitronb(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "nitronb", *map(str, args)], input=stdin,
                          capture_output=True, timeout=120)


def test_keygen_then_round_trip_of_the_sample(tmp_path):
    key = tmp_path / "key.hex"
    done = nitronb("keygen", "-o", key)
    assert done.returncode == 0
    text = key.read_text(encoding="ascii").strip()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert text not in done.stderr.decode() + done.stdout.decode()
    # the key's fingerprint, none of its digits
    assert f"fingerprint {fingerprint(text)} " in done.stderr.decode()
    assert re.fullmatch(r"wrote key with fingerprint [0-9a-f]{8} to \S+ \(mode 0600\)\n",
                        done.stderr.decode())
    assert nitronb("aes", "enc", "-K", key, "-in", sample_path(), "-out", tmp_path / "c.enc").returncode == 0
    assert nitronb("aes", "dec", "--key", key, "--in", tmp_path / "c.enc", "--out", tmp_path / "c.csv").returncode == 0
    assert (tmp_path / "c.csv").read_bytes() == sample_path().read_bytes()


def test_keygen_refuses_to_overwrite(tmp_path):
    key = tmp_path / "key.hex"
    assert main(["keygen", "-o", str(key)]) == 0
    before = key.read_text(encoding="ascii")
    done = nitronb("keygen", "-o", key)
    assert done.returncode == 1
    assert b"already exists" in done.stderr and b"--force" in done.stderr
    assert key.read_text(encoding="ascii") == before
    assert nitronb("keygen", "-o", key, "--force").returncode == 0
    assert key.read_text(encoding="ascii") != before


def test_keygen_to_stdout():
    done = nitronb("keygen")
    assert done.returncode == 0 and len(done.stdout.strip()) == 64


def test_flipped_byte_gives_one_line_error_and_no_output(tmp_path):
    key = tmp_path / "key.hex"
    main(["keygen", "-o", str(key)])
    main(["aes", "enc", "-K", str(key), "-in", str(sample_path()), "-out", str(tmp_path / "c.enc")])
    blob = bytearray((tmp_path / "c.enc").read_bytes())
    blob[len(blob) // 2] ^= 0x80
    (tmp_path / "c.enc").write_bytes(blob)
    done = nitronb("aes", "dec", "-K", key, "-in", tmp_path / "c.enc", "-out", tmp_path / "c.csv")
    assert done.returncode != 0
    err = done.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("nitronb: error: cannot decrypt")
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.enc", "key.hex"]


def test_stdin_and_stdout(tmp_path):
    key = tmp_path / "key.hex"
    main(["keygen", "-o", str(key)])
    enc = nitronb("aes", "enc", "-K", key, "-in", "-", "-out", "-", stdin=b"hello enclave")
    assert enc.returncode == 0 and len(enc.stdout) == len(b"hello enclave") + 28
    dec = nitronb("aes", "dec", "-K", key, "-in", "-", "-out", "-", stdin=enc.stdout)
    assert dec.returncode == 0 and dec.stdout == b"hello enclave"
    bad = nitronb("aes", "dec", "-K", key, "-in", "-", "-out", "-", stdin=enc.stdout[:-1])
    assert bad.returncode == 1 and bad.stdout == b""
    to_file = nitronb("aes", "dec", "-K", key, "-in", "-", "-out", tmp_path / "o", stdin=enc.stdout)
    assert to_file.returncode == 0 and (tmp_path / "o").read_bytes() == b"hello enclave"


def test_bad_key_file_and_missing_input(tmp_path):
    (tmp_path / "key.hex").write_text("ABC", encoding="ascii")
    done = nitronb("aes", "enc", "-K", tmp_path / "key.hex", "-in", sample_path(), "-out", tmp_path / "o")
    assert done.returncode == 1 and b"has 3 hex characters" in done.stderr
    main(["keygen", "-o", str(tmp_path / "good.hex"), ])
    done = nitronb("aes", "enc", "-K", tmp_path / "good.hex", "-in", tmp_path / "none", "-out", tmp_path / "o")
    assert done.returncode == 1 and b"does not exist" in done.stderr
    assert not (tmp_path / "o").exists()


def test_output_over_input_is_refused(tmp_path):
    main(["keygen", "-o", str(tmp_path / "k")])
    (tmp_path / "f").write_bytes(b"data")
    done = nitronb("aes", "enc", "-K", tmp_path / "k", "-in", tmp_path / "f", "-out", tmp_path / "f")
    assert done.returncode == 1 and b"would overwrite the input" in done.stderr
    assert (tmp_path / "f").read_bytes() == b"data"


def test_silent_when_not_a_terminal(tmp_path):
    main(["keygen", "-o", str(tmp_path / "k")])
    done = nitronb("aes", "enc", "-K", tmp_path / "k", "-in", sample_path(), "-out", tmp_path / "c.enc")
    assert done.returncode == 0 and done.stdout == b"" and done.stderr == b""


HEAVY = ("pandas", "boto3", "botocore", "docker", "moto", "requests", "numpy", "tqdm")


def test_start_up_imports_nothing_heavy(tmp_path):
    main(["keygen", "-o", str(tmp_path / "k")])
    (tmp_path / "in").write_bytes(b"x" * 1000)
    probe = (
        "import sys, json\n"
        "from nitronb.cli import main\n"
        f"code = main(['aes', 'enc', '-K', {str(tmp_path / 'k')!r}, '-in', {str(tmp_path / 'in')!r},"
        f" '-out', {str(tmp_path / 'out')!r}])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{HEAVY!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


def test_help_lists_commands():
    done = nitronb("--help")
    assert done.returncode == 0
    for command in ("keygen", "aes"):
        assert command.encode() in done.stdout


def test_command_table_matches_what_the_modules_register():
    from nitronb.cli import COMMANDS, build_parser

    parser = build_parser()
    registered = set(parser._subparsers._group_actions[0].choices)
    assert registered == set(COMMANDS)
    for command, module in COMMANDS.items():
        only = build_parser(command)._subparsers._group_actions[0].choices
        assert command in only, (command, module)


def test_paths_that_cannot_be_written_give_one_line(tmp_path):
    done = nitronb("keygen", "-o", tmp_path / "no" / "such" / "k.hex")
    assert done.returncode == 1 and b"Traceback" not in done.stderr
    assert done.stderr.decode().count("\n") == 1
    main(["keygen", "-o", str(tmp_path / "k")])
    (tmp_path / "d").mkdir()
    done = nitronb("aes", "enc", "-K", tmp_path / "k", "-in", sample_path(), "-out", tmp_path / "d")
    assert done.returncode == 1 and b"is a folder" in done.stderr


def test_stdin_to_a_symlink_a_pipe_or_a_slash(tmp_path):
    import threading

    main(["keygen", "-o", str(tmp_path / "k")])
    enc = nitronb("aes", "enc", "-K", tmp_path / "k", "-in", "-", "-out", "-", stdin=b"rows")
    (tmp_path / "real").write_bytes(b"old")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert nitronb("aes", "dec", "-K", tmp_path / "k", "-in", "-", "-out", tmp_path / "link",
                   stdin=enc.stdout).returncode == 0
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real").read_bytes() == b"rows"
    os.mkfifo(tmp_path / "fifo")
    got = []
    reader = threading.Thread(target=lambda: got.append((tmp_path / "fifo").read_bytes()))
    reader.start()
    assert nitronb("aes", "dec", "-K", tmp_path / "k", "-in", "-", "-out", tmp_path / "fifo",
                   stdin=enc.stdout).returncode == 0
    reader.join(10)
    assert got == [b"rows"] and stat.S_ISFIFO((tmp_path / "fifo").stat().st_mode)
    done = nitronb("aes", "dec", "-K", tmp_path / "k", "-in", "-", "-out", f"{tmp_path}/new/",
                   stdin=enc.stdout)
    assert done.returncode == 1 and b"names a folder" in done.stderr
    assert not (tmp_path / "new").exists()


def test_a_full_device_is_one_line(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    main(["keygen", "-o", str(tmp_path / "k")])
    done = nitronb("aes", "enc", "-K", tmp_path / "k", "-in", sample_path(), "-out", "/dev/full")
    assert done.returncode == 1 and b"Traceback" not in done.stderr
    assert b"No space left" in done.stderr


# --- inputs that are streams: process substitution, /dev/stdin, a FIFO -----------------------


def _encrypted(tmp_path, size=3 * (1 << 20) + 5):
    """A key, a plaintext of ``size`` random bytes (several chunks), and its encryption."""
    main(["keygen", "-o", str(tmp_path / "k")])
    (tmp_path / "p").write_bytes(os.urandom(size))
    assert main(["aes", "enc", "-K", str(tmp_path / "k"), "-in", str(tmp_path / "p"),
                 "-out", str(tmp_path / "c.enc")]) == 0
    return tmp_path / "k", tmp_path / "p", tmp_path / "c.enc"


def _bash(command: str, cwd) -> subprocess.CompletedProcess:
    """``command`` run by bash, with ``NITRONB`` naming this interpreter's ``-m nitronb``."""
    nitronb_command = f"{shlex.quote(sys.executable)} -m nitronb"
    return subprocess.run(["bash", "-c", command.replace("NITRONB", nitronb_command)], cwd=cwd,
                          capture_output=True, timeout=120)


def _feed_fifo(path, data: bytes) -> threading.Thread:
    """A thread that writes ``data`` into the FIFO ``path`` once a reader opens it."""
    def write() -> None:
        with open(path, "wb") as handle:
            handle.write(data)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_process_substitution_input(tmp_path):
    key, plain, enc = _encrypted(tmp_path)
    done = _bash("NITRONB aes dec -K k -in <(cat c.enc) -out o", tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o").read_bytes() == plain.read_bytes()
    assert stat.S_IMODE((tmp_path / "o").stat().st_mode) == 0o600
    done = _bash("NITRONB aes enc -K k -in <(cat p) -out c2.enc", tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "c2.enc").stat().st_size == plain.stat().st_size + 28
    done = _bash("NITRONB aes dec -K k -in <(cat c2.enc) -out - | cmp - p", tmp_path)
    assert done.returncode == 0, done.stderr


def test_dev_stdin_input(tmp_path):
    key, plain, enc = _encrypted(tmp_path)
    done = nitronb("aes", "dec", "-K", key, "-in", "/dev/stdin", "-out", tmp_path / "o",
                   stdin=enc.read_bytes())
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o").read_bytes() == plain.read_bytes()
    done = nitronb("aes", "enc", "-K", key, "-in", "/dev/stdin", "-out", tmp_path / "c2.enc",
                   stdin=b"rows from a pipe")
    assert done.returncode == 0, done.stderr
    done = nitronb("aes", "dec", "-K", key, "-in", tmp_path / "c2.enc", "-out", "-")
    assert done.stdout == b"rows from a pipe"


def test_fifo_input(tmp_path):
    key, plain, enc = _encrypted(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = _feed_fifo(fifo, enc.read_bytes())
    done = nitronb("aes", "dec", "-K", key, "-in", fifo, "-out", tmp_path / "o")
    writer.join(30)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o").read_bytes() == plain.read_bytes()
    writer = _feed_fifo(fifo, b"rows from a FIFO")
    done = nitronb("aes", "enc", "-K", key, "-in", fifo, "-out", tmp_path / "c2.enc")
    writer.join(30)
    assert done.returncode == 0, done.stderr
    assert nitronb("aes", "dec", "-K", key, "-in", tmp_path / "c2.enc", "-out", "-").stdout == \
        b"rows from a FIFO"


@pytest.mark.parametrize("damage", ["flipped", "cut", "short", "empty"])
@pytest.mark.parametrize("how", ["stdin", "fifo"])
def test_a_damaged_stream_writes_nothing(tmp_path, damage, how):
    key, plain, enc = _encrypted(tmp_path, size=100_000)
    blob = bytearray(enc.read_bytes())
    if damage == "flipped":
        blob[len(blob) // 2] ^= 0x01
    elif damage == "cut":
        del blob[-1:]
    elif damage == "short":
        del blob[20:]
    else:
        blob.clear()
    (tmp_path / "o").write_bytes(b"the previous output")
    before = sorted(p.name for p in tmp_path.iterdir())
    if how == "stdin":
        done = nitronb("aes", "dec", "-K", key, "-in", "/dev/stdin", "-out", tmp_path / "o",
                       stdin=bytes(blob))
    else:
        os.mkfifo(tmp_path / "fifo")
        before.append("fifo")
        before.sort()
        writer = _feed_fifo(tmp_path / "fifo", bytes(blob))
        done = nitronb("aes", "dec", "-K", key, "-in", tmp_path / "fifo", "-out", tmp_path / "o")
        writer.join(30)
    err = done.stderr.decode()
    assert done.returncode == 1
    assert err.startswith("nitronb: error: cannot decrypt") and err.count("\n") == 1
    if damage in ("short", "empty"):
        assert f"it is {len(blob)} bytes" in err and "truncated" in err
    else:
        assert "authentication failed" in err
    assert "Nothing was written" in err
    assert (tmp_path / "o").read_bytes() == b"the previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_a_decryption_stopped_by_a_signal_leaves_no_part_file(tmp_path, signame):
    import signal
    import time

    key, plain, enc = _encrypted(tmp_path)
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    out = tmp_path / "out.bin"
    # read-write: the FIFO stays open (no end of input) and opening it does not block
    writer = os.open(fifo, os.O_RDWR)
    try:
        # the signal at its default in the command, even when these tests run under nohup
        # (a signal the command inherits ignored stays ignored, as nohup wants)
        sig = getattr(signal, signame)
        proc = subprocess.Popen([sys.executable, "-m", "nitronb", "aes", "dec", "-K", str(key),
                                 "-in", str(fifo), "-out", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
        os.write(writer, enc.read_bytes()[:1 << 20])  # part of the input: the .part file opens
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".out.bin.*.part")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(tmp_path.glob(".out.bin.*.part")), "the decryption did not start"
        proc.send_signal(getattr(signal, signame))
        _, stderr = proc.communicate(timeout=60)
    finally:
        os.close(writer)
    assert proc.returncode != 0
    assert proc.returncode == 128 + getattr(signal, signame)
    assert stderr.decode().strip().splitlines() == [f"nitronb: terminated by {signame}"]
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*.part"))
    assert not out.exists()


def test_the_aes_help_says_sigkill_leaves_a_part_file():
    done = nitronb("aes", "--help")
    assert b"SIGKILL" in done.stdout and b".part" in done.stdout
