#!/usr/bin/python3
"""Fetch and decrypt every input dataset, describe it, and upload the encrypted result to every
output dataset. The paths are those of the enclave OS."""

import base64
import glob
import json
import os
import subprocess
import sys

sys.path.insert(0, "/demo")

import utils  # noqa: E402

RW = "/opt/fortanix/enclave-os/app-config/rw"
PLAIN = "/opt/fortanix/enclave-os/app-config/rwdecrypted"


def main():
    os.makedirs(PLAIN, exist_ok=True)
    files = []
    for folder in sorted(glob.glob(RW + "/input/*/dataset/")):
        node = os.path.basename(os.path.dirname(os.path.dirname(folder)))
        url, key = utils.read_dataset(folder)
        path = os.path.join(PLAIN, node + ".csv")
        with open(path, "wb") as fh:
            fh.write(utils.decrypt(key, utils.download(url)))
        files.append(path)
        print("decrypted input", node, file=sys.stderr, flush=True)
    done = subprocess.run(["/usr/bin/python3", "/demo/describe.py", *files],
                          capture_output=True)
    result = json.dumps({"returncode": done.returncode,
                         "stdout": base64.b64encode(done.stdout).decode("ascii"),
                         "stderr": base64.b64encode(done.stderr).decode("ascii")}).encode()
    for folder in sorted(glob.glob(RW + "/output/*/dataset/")):
        url, key = utils.read_dataset(folder)
        utils.upload(url, utils.encrypt(key, result))
        print("uploaded the result to", os.path.basename(os.path.dirname(os.path.dirname(folder))),
              file=sys.stderr, flush=True)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
