"""``python -m nitronb.ccm.server --workspace WS --host 127.0.0.1 --port PORT``: run the manager."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from nitronb.http_server import add_arguments, limits_from


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nitronb.ccm.server",
                                     description="Run the nitronb manager (CCM-shaped HTTP API).")
    parser.add_argument("--workspace", required=True, help="workspace folder (state in WS/ccm)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument("--trust-root", action="append", default=[], metavar="PEM",
                        help="a trusted attestation root certificate (repeatable); "
                             "WS/nsm/root.pem is trusted too")
    parser.add_argument("--verifier", metavar="MODULE:FACTORY",
                        help="use another attestation verifier: FACTORY(workspace) returns an "
                             "object with the AttestationVerifier interface")
    add_arguments(parser)
    args = parser.parse_args(argv)

    from nitronb.ccm.api import make_server
    from nitronb.ccm.provisioning import NitroVerifier
    from nitronb.ccm.service import Service
    from nitronb.errors import NitronbError
    from nitronb.workspace import workspace_dir

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workspace = workspace_dir(args.workspace)
    roots = [Path(p) for p in args.trust_root] + [workspace / "nsm" / "root.pem"]
    try:
        verifier = (_load_verifier(args.verifier, workspace) if args.verifier
                    else NitroVerifier(roots))
        service = Service.open(workspace, verifier=verifier)
        server = make_server(service, args.host, args.port, limits=limits_from(args))
    except (NitronbError, OSError, ImportError, AttributeError) as exc:
        print(f"nitronb manager: error: {exc}", file=sys.stderr)
        return 1

    host, port = server.server_address[:2]
    logging.getLogger("nitronb.ccm").info("manager listening on http://%s:%d", host, port)
    print(f"nitronb manager listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()  # until SIGTERM or SIGINT; requests in flight finish first
    finally:
        server.server_close()
        service.store.close()
    return 0


def _load_verifier(spec: str, workspace: Path):
    import importlib

    module, _, factory = spec.partition(":")
    if not factory:
        raise AttributeError(f"--verifier {spec!r}: expected MODULE:FACTORY.")
    return getattr(importlib.import_module(module), factory)(workspace)


if __name__ == "__main__":
    sys.exit(main())
