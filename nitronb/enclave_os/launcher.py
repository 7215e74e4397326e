"""The enclave launcher (the enclave OS role): attest, be provisioned, write the app-config
folder, run the app, wipe the credentials, and exit with the app's code.

    python3 launcher.py [APP COMMAND …]        (default: python3 /app/start.py)

Environment: ``NODE_AGENT`` and ``CCM_BACKEND`` (URLs), ``APPCONFIG_ID``, ``NITRONB_ENCLAVE_ID``
(given by the node agent that launched this enclave), and ``APP_CONFIG_DIR`` (default
``/opt/fortanix/enclave-os/app-config/rw``). The enclave's node-agent token comes from the
inherited file descriptor ``NITRONB_ENCLAVE_TOKEN_FD`` (read once, then closed), else from the
file ``NITRONB_ENCLAVE_TOKEN_FILE`` (which the host removes once the token is used), else from
``NITRONB_ENCLAVE_TOKEN``; the launcher makes itself non-dumpable (Linux) before reading it, and
the app gets neither the token nor where it came from.

The release is the runtime configuration in the real CCM's shape (DESIGN §3.5). The folder it
writes (DESIGN §3.3): ``APP_CONFIG_DIR/<port>/<node>/dataset/credentials.bin`` and
``location.txt`` for each dataset of ``config.workflow.port_map`` (location and credentials from
``extra.connections``), and each configuration item of ``config.app_config`` at its absolute
path, whose prefix ``/opt/fortanix/enclave-os/app-config/rw/`` stands for ``APP_CONFIG_DIR``.
Unsafe names and paths (``/`` in a name, ``..``, NUL, control characters, a path outside the
prefix, a symbolic link on the way) are refused before anything is written.

Runs inside the enclave image: standard library and ``cryptography`` only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_APP_CONFIG_DIR = "/opt/fortanix/enclave-os/app-config/rw"
#: configuration items are keyed by absolute paths below this; it stands for APP_CONFIG_DIR
APP_CONFIG_PREFIX = DEFAULT_APP_CONFIG_DIR + "/"
DEFAULT_COMMAND = ["python3", "/app/start.py"]
ENVELOPE_ALGORITHM = "X25519-HKDF-SHA256-A256GCM"
_ENVELOPE_INFO = b"nitronb ccm provisioning v1"
TIMEOUT = 60
#: what a port name may be (the manager applies the same rule): one folder name of letters,
#: digits, '.', '_' and '-', starting with a letter or digit, no '..', at most 64 characters
PORT_NAME = re.compile(r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class LaunchError(Exception):
    """The enclave could not be provisioned; the message says which step failed."""


#: environment entries the launcher keeps from the app
PRIVATE_ENV = ("NITRONB_ENCLAVE_TOKEN", "NITRONB_ENCLAVE_TOKEN_FD",
               "NITRONB_ENCLAVE_TOKEN_FILE")


def log(message: str) -> None:
    print(f"[enclave-os] {message}", file=sys.stderr, flush=True)


# --- talking to the node agent and the manager ------------------------------------------------


def _post(url: str, body: dict, *, token: str | None = None, what: str) -> dict:
    data = json.dumps(body).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        try:
            detail = json.loads(detail).get("message") or detail
        except (ValueError, AttributeError):
            pass
        raise LaunchError(f"{what} refused (HTTP {exc.code}): {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise LaunchError(f"{what} failed: cannot reach {url} ({exc}).") from None


# --- keys, binding and the envelope -------------------------------------------------------------


def new_key_pair():
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    private = X25519PrivateKey.generate()
    return private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def binding(public_key: bytes, config_id: str) -> bytes:
    """em-app's ``user_data``, 64 bytes: ``SHA256(0x01 ‖ SHA256(public_key) ‖ id) ‖ id`` with
    ``id`` the APPCONFIG_ID's 32 raw bytes (DESIGN §3.7)."""
    try:
        raw = bytes.fromhex(config_id) if len(config_id) == 64 else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise LaunchError(f"APPCONFIG_ID {config_id[:20]!r} is not 64 hex characters.")
    return hashlib.sha256(b"\x01" + hashlib.sha256(public_key).digest() + raw).digest() + raw


def open_envelope(private_key, envelope: dict) -> dict:
    """Decrypt the manager's release sealed to this enclave's X25519 key."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if envelope.get("alg") != ENVELOPE_ALGORITHM:
        raise LaunchError(f"the release uses {envelope.get('alg')!r}, not {ENVELOPE_ALGORITHM}.")
    epk = base64.b64decode(envelope["epk"])
    mine = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    shared = private_key.exchange(X25519PublicKey.from_public_bytes(epk))
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=epk + mine,
               info=_ENVELOPE_INFO).derive(shared)
    aad = f"{ENVELOPE_ALGORITHM}|{envelope['config_id']}".encode()
    try:
        plain = AESGCM(key).decrypt(base64.b64decode(envelope["nonce"]),
                                    base64.b64decode(envelope["ciphertext"]), aad)
    except InvalidTag:
        raise LaunchError("the release does not open with this enclave's key.") from None
    return json.loads(plain)


def config_id_of(config: dict) -> str:
    """APPCONFIG_ID (DESIGN §3.5): SHA-256 of the config's compact JSON, keys as stored."""
    text = json.dumps(config, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- the app-config folder ------------------------------------------------------------------


def safe_part(name: str, what: str) -> str:
    """``name`` if it is one safe folder name: no ``/``, ``\\``, ``..``, NUL or control
    characters."""
    if (not isinstance(name, str) or not name or name in (".", "..") or ".." in name
            or "/" in name or "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name)):
        raise LaunchError(f"unsafe {what} {name!r}: it must not contain '/', '..', NUL or "
                          "control characters.")
    return name


def port_part(name: str) -> str:
    """``name`` if it is a port name (:data:`PORT_NAME`), the folder of that port's datasets."""
    if not isinstance(name, str) or not PORT_NAME.fullmatch(name):
        raise LaunchError(f"unsafe port name {name!r}: it must be letters, digits, '.', '_' or "
                          "'-', begin with a letter or digit, and hold no '..'.")
    return name


def item_parts(path: str, ports) -> list[str]:
    """The parts of a configuration item's absolute path below :data:`APP_CONFIG_PREFIX`, to
    be written below the app-config folder (never at the host's ``/opt``)."""
    if (not isinstance(path, str) or "\\" in path
            or any(ord(c) < 32 or ord(c) == 127 for c in path)):
        raise LaunchError(f"unsafe configuration item path {path!r}: no NUL, control "
                          "characters or '\\'.")
    if not path.startswith(APP_CONFIG_PREFIX):
        raise LaunchError(f"unsafe configuration item path {path!r}: it must be an absolute "
                          f"path below {APP_CONFIG_PREFIX}.")
    parts = path[len(APP_CONFIG_PREFIX):].split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise LaunchError(f"unsafe configuration item path {path!r}: no '..', '.' or empty "
                          "parts.")
    if parts[0] in ports:
        raise LaunchError(f"unsafe configuration item path {path!r}: it would write into the "
                          f"folder of port {parts[0]!r}.")
    return parts


def _write_private(folder: Path, parts: list[str], data: bytes) -> Path:
    """Write ``data`` to ``folder/parts…`` (mode 0600), creating folders (0700) on the way and
    following no symbolic link below ``folder``; the file must not exist yet."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i, part in enumerate(parts[:-1]):
            try:
                os.mkdir(part, 0o700, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                inner = os.open(part, flags, dir_fd=fd)
            except OSError:
                raise LaunchError(f"cannot write {'/'.join(parts)}: {'/'.join(parts[:i + 1])} "
                                  "is a symbolic link or not a folder.") from None
            os.close(fd)
            fd = inner
        try:
            out = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                          0o600, dir_fd=fd)
        except FileExistsError:
            raise LaunchError(f"cannot write {'/'.join(parts)}: it exists already (two entries "
                              "of the release name the same file, or a link is in the way).") \
                from None
        with os.fdopen(out, "wb") as handle:
            handle.write(data)
    finally:
        os.close(fd)
    return folder.joinpath(*parts)


def write_app_config(folder: Path, release: dict) -> list[Path]:
    """Lay out DESIGN §3.3 under ``folder`` from a release ``{"config", "extra"}``; return the
    files written. Every name and path is checked before the first file is written."""
    config = release.get("config") or {}
    connections = (release.get("extra") or {}).get("connections") or {}
    port_map = (config.get("workflow") or {}).get("port_map") or {}
    plan: list[tuple[list[str], bytes]] = []
    for port, nodes in port_map.items():
        port_part(port)
        for node, target in nodes.items():
            safe_part(node, "node name")
            if "dataset" not in (target or {}):
                continue
            dataset = ((connections.get(port) or {}).get(node) or {}).get("dataset") or {}
            if not dataset.get("location") or not isinstance(dataset.get("credentials"), dict):
                raise LaunchError(f"the release has no location and credentials for node "
                                  f"{node!r} on port {port!r}.")
            plan.append(([port, node, "dataset", "credentials.bin"],
                         json.dumps(dataset["credentials"]).encode("utf-8")))
            plan.append(([port, node, "dataset", "location.txt"],
                         str(dataset["location"]).encode("utf-8")))
    for path, item in (config.get("app_config") or {}).items():
        parts = item_parts(path, port_map)
        try:
            data = base64.b64decode((item or {}).get("contents") or "", validate=True)
        except (ValueError, TypeError, AttributeError):
            raise LaunchError(f"configuration item {path!r}: contents are not base64.") from None
        plan.append((parts, data))
    return [_write_private(folder, parts, data) for parts, data in plan]


def wipe(folder: Path) -> None:
    """Overwrite every file under ``folder`` with zeros, then remove the tree."""
    if not folder.exists():
        return
    for current, _dirs, names in os.walk(folder):
        for name in names:
            path = Path(current) / name
            try:
                size = path.lstat().st_size
                if path.is_file() and not path.is_symlink():
                    with open(path, "r+b") as handle:
                        handle.write(bytes(size))
                        handle.flush()
                        os.fsync(handle.fileno())
            except OSError:
                pass
    shutil.rmtree(folder, ignore_errors=True)


# --- the launch -------------------------------------------------------------------------------


def make_non_dumpable() -> bool:
    """``prctl(PR_SET_DUMPABLE, 0)``: no core dump, and processes of the same user (the app
    among them) cannot ptrace this one or read its memory. False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(4, 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        return False


def take_token(env: dict) -> str | None:
    """The enclave's node-agent token: read from the descriptor ``NITRONB_ENCLAVE_TOKEN_FD``
    (which is closed), else from the file ``NITRONB_ENCLAVE_TOKEN_FILE`` (which the host removes
    once the token is used), else ``NITRONB_ENCLAVE_TOKEN``; every such entry leaves ``env``.

    Raises :class:`LaunchError` when the descriptor or the file cannot be read."""
    token = env.pop("NITRONB_ENCLAVE_TOKEN", None)
    number = env.pop("NITRONB_ENCLAVE_TOKEN_FD", None)
    path = env.pop("NITRONB_ENCLAVE_TOKEN_FILE", None)
    if path and not number:
        try:
            with open(path, "r", encoding="utf-8") as source:
                token = source.read(4096).strip()
        except OSError as exc:
            raise LaunchError(f"cannot read the enclave token from {path}: "
                              f"{exc.strerror or exc}.") from None
    if number:
        try:
            fd = int(number)
        except ValueError:
            raise LaunchError(f"NITRONB_ENCLAVE_TOKEN_FD {number!r} is not a descriptor.") \
                from None
        try:
            chunks = []
            while True:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError as exc:
            raise LaunchError(f"cannot read the enclave token from descriptor {fd}: "
                              f"{exc.strerror or exc}.") from None
        finally:
            try:
                os.close(fd)
            except OSError:
                pass
        token = b"".join(chunks).decode("ascii", "replace").strip()
    for name in PRIVATE_ENV:
        os.environ.pop(name, None)
    return token or None


def provision(env: dict, token: str | None = None) -> dict:
    """Attest through the node agent (with the enclave's ``token``) and obtain the release
    from the manager."""
    missing = [k for k in ("NODE_AGENT", "CCM_BACKEND", "APPCONFIG_ID", "NITRONB_ENCLAVE_ID")
               if not env.get(k)]
    if missing:
        raise LaunchError(f"missing environment: {', '.join(missing)}; start the enclave with "
                          "`nitronb run`, which sets them.")
    node_agent = env["NODE_AGENT"].rstrip("/")
    ccm = env["CCM_BACKEND"].rstrip("/")
    config_id = env["APPCONFIG_ID"]
    private, public = new_key_pair()
    user_data = binding(public, config_id)
    nonce = _post(f"{ccm}/v1/runtime/nonces", {}, what="asking the manager for a nonce")["nonce"]
    document = _post(f"{node_agent}/v1/enclaves/{env['NITRONB_ENCLAVE_ID']}/attestation",
                     {"public_key": base64.b64encode(public).decode(),
                      "user_data": base64.b64encode(user_data).decode(),
                      "nonce": nonce},
                     token=token,
                     what="attestation by the node agent")["document"]
    log(f"attested: public key and APPCONFIG_ID {config_id[:12]}… bound into the document")
    reply = _post(f"{ccm}/v1/runtime/app_configs/{config_id}/provision",
                  {"attestation_document": document, "nonce": nonce},
                  what="provisioning by the manager")
    release = open_envelope(private, reply["envelope"])
    if config_id_of(release["config"]) != config_id:
        raise LaunchError("the released configuration does not hash to APPCONFIG_ID "
                          f"{config_id[:12]}…; refusing it.")
    count = sum(len(nodes) for nodes in
                ((release.get("extra") or {}).get("connections") or {}).values())
    log(f"provisioned: credentials for {count} dataset(s)")
    return release


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv or DEFAULT_COMMAND
    make_non_dumpable()
    env = dict(os.environ)
    folder = Path(env.get("APP_CONFIG_DIR") or DEFAULT_APP_CONFIG_DIR)
    try:
        token = take_token(env)
        release = provision(env, token)
    except LaunchError as exc:
        log(f"refused: {exc}")
        return 70
    child = None

    def forward(signum, _frame):
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            written = write_app_config(folder, release)
        except OSError as exc:
            raise LaunchError(f"cannot write the app-config folder {folder}: "
                              f"{exc.strerror or exc}.") from None
        log(f"wrote {len(written)} file(s) under the app-config folder; starting the app")
        child = subprocess.Popen(command, env=dict(env, APP_CONFIG_DIR=str(folder)),
                                 close_fds=True)
        code = child.wait()
    except LaunchError as exc:
        log(f"refused: {exc}")
        code = 70
    except OSError as exc:
        log(f"cannot start the app {command!r}: {exc}")
        code = 71
    finally:
        wipe(folder)
    log(f"app exited with code {code}; credentials wiped")
    return code


if __name__ == "__main__":
    sys.exit(main())
