#!/usr/bin/python3
"""An enclave app that probes its sandbox: it looks for the enclave's node-agent token wherever
an app could (its environment, /proc/self/environ, its open descriptors, every visible process's
environment and command line) and tries each candidate against the node agent; it checks which
host paths it can see, writes outside the app-config folder, and runs the stand-in Python."""

import glob
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

CANDIDATE = re.compile(rb"[A-Za-z0-9_-]{20,}")
RW = "/opt/fortanix/enclave-os/app-config/rw"


def read(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return b""
    try:
        return os.read(fd, 1 << 16)
    except OSError:
        return b""
    finally:
        os.close(fd)


def candidates():
    found = {}
    for name, value in os.environ.items():
        found.setdefault(value.encode(), f"environment {name}")
    sources = {"/proc/self/environ": read("/proc/self/environ")}
    for fd in os.listdir("/proc/self/fd"):
        sources[f"descriptor {fd}"] = read(f"/proc/self/fd/{fd}")
    for path in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
        sources[path] = read(path)
    for where, data in sources.items():
        for match in CANDIDATE.findall(data):
            found.setdefault(match, where)
    return found


def works(token):
    url = f"{os.environ['NODE_AGENT']}/v1/enclaves/{os.environ['NITRONB_ENCLAVE_ID']}/attestation"
    body = json.dumps({"public_key": "AQ==", "user_data": "AQ==", "nonce": "AQ=="}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code != 401
    except OSError:
        return False


def main():
    found = candidates()
    used = [where for value, where in found.items() if works(value.decode())]
    print(f"probe: tried {len(found)} candidate tokens; accepted: {used or 'none'}")
    print(f"probe: open descriptors: {sorted(int(fd) for fd in os.listdir('/proc/self/fd'))}")
    hidden = os.environ.get("PROBE_HOST_PATHS", "").split(":")
    print(f"probe: host paths visible: {[p for p in hidden if p and os.path.exists(p)] or 'none'}")
    creds = glob.glob(f"{RW}/*/*/dataset/credentials.bin")
    print(f"probe: credentials files at the canonical path: {len(creds)}")
    print(f"probe: cwd {os.getcwd()}; PROBE_MODE {os.environ.get('PROBE_MODE')}")
    print(f"probe: made folders: {[d for d in ('/demo/code', '/demo/input') if os.path.isdir(d)]}")
    for path in (RW + "NAME/decrypted.csv", "/demo/x", "/tmp/probe-x"):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as out:
            out.write("probe-" + "plaintext-marker\n")
    for command in (["/usr/bin/python3", "-c", "import pandas, requests, cryptography"],
                    ["/usr/bin/env", "python3", "-c", "import pandas"],
                    ["python3", "-c", "import cryptography"]):
        done = subprocess.run(command, capture_output=True, text=True)
        print(f"probe: {' '.join(command[:2])}: exit {done.returncode} {done.stderr[-200:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
