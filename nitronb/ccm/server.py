"""``python -m nitronb.ccm.server [--workspace WS] [--database-url URL] [--workers N]``: run the
manager (also ``nitronb ccm serve``).

State: the manager key and the parties' tokens in ``WS/ccm``; the records in the database
(``--database-url``, else ``$NITRONB_DATABASE_URL``, else ``WS/ccm/ccm.sqlite3``). With
``--workers N`` (or ``$NITRONB_MANAGER_WORKERS``) the process opens the database (migrations,
parties) and the listening socket, then forks N worker processes that serve the socket
together; SIGTERM or SIGINT to it stops them all gracefully, and a worker that dies stops the
others (exit code 1).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

from nitronb.http_server import add_arguments, limits_from

log = logging.getLogger("nitronb.ccm")


def add_server_arguments(parser: argparse.ArgumentParser, workspace_dest: str = "workspace"
                         ) -> None:
    """The manager's options (``--workspace``, ``--host``, ``--port``, ``--database-url``,
    ``--workers``, ``--trust-root``, ``--verifier`` and the HTTP timeouts) on ``parser``;
    ``--workspace`` is stored as ``workspace_dest``."""
    parser.add_argument("--workspace", dest=workspace_dest, help="workspace folder (state in WS/ccm; default "
                                            "$NITRONB_WORKSPACE or ~/.nitronb)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument("--database-url", metavar="URL",
                        help="the database: sqlite:///FILE or postgresql://USER@HOST/DB (default "
                             "$NITRONB_DATABASE_URL, else WS/ccm/ccm.sqlite3); a password is "
                             "better kept in ~/.pgpass than in the URL")
    parser.add_argument("--workers", type=int, metavar="N",
                        default=int(os.environ.get("NITRONB_MANAGER_WORKERS") or 1),
                        help="worker processes serving the port together (default "
                             "$NITRONB_MANAGER_WORKERS or 1)")
    parser.add_argument("--trust-root", action="append", default=[], metavar="PEM",
                        help="a trusted attestation root certificate (repeatable); "
                             "WS/nsm/root.pem is trusted too")
    parser.add_argument("--verifier", metavar="MODULE:FACTORY",
                        help="use another attestation verifier: FACTORY(workspace) returns an "
                             "object with the AttestationVerifier interface")
    add_arguments(parser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nitronb.ccm.server",
                                     description="Run the nitronb manager (CCM-shaped HTTP API).")
    add_server_arguments(parser)
    return serve(parser.parse_args(argv))


def serve(args: argparse.Namespace) -> int:
    """Run the manager with the options of :func:`add_server_arguments` until SIGTERM or
    SIGINT; return the exit code (1: it could not start, or a worker died)."""
    if args.workers < 1:
        print("nitronb manager: error: --workers must be 1 or more.", file=sys.stderr)
        return 2

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
        service = Service.open(workspace, verifier=verifier, database_url=args.database_url)
        server = make_server(service, args.host, args.port, limits=limits_from(args))
    except (NitronbError, OSError, ImportError, AttributeError) as exc:
        print(f"nitronb manager: error: {exc}", file=sys.stderr)
        return 1

    host, port = server.server_address[:2]
    workers = f" ({args.workers} workers)" if args.workers > 1 else ""
    log.info("manager listening on http://%s:%d%s, database %s", host, port, workers,
             service.store.location)
    print(f"nitronb manager listening on http://{host}:{port}", flush=True)
    if args.workers > 1:
        service.store.close()  # each worker opens connections of its own
        return _serve_workers(server, args.workers)
    try:
        server.serve_forever()  # until SIGTERM or SIGINT; requests in flight finish first
    finally:
        server.server_close()
        service.store.close()
    return 0


def _serve_workers(server, count: int) -> int:
    """Fork ``count`` processes serving ``server``'s socket; wait for them all. SIGTERM/SIGINT
    are passed on as SIGTERM (a graceful stop); a worker that exits first stops the rest."""
    stops = (signal.SIGTERM, signal.SIGINT)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # no signal between fork and
    alive: set[int] = set()                                      # the handlers below
    for _ in range(count):
        pid = os.fork()
        if pid == 0:  # a worker: the default handlers (uvicorn sets its own while serving)
            for sig in stops:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            code = 1
            try:
                server.serve_forever()
                code = 0
            finally:
                os._exit(code)
        alive.add(pid)
    stopping = False

    def stop(signum: int | None = None, frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in alive:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    previous = {sig: signal.signal(sig, stop) for sig in stops}
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    code = 0
    try:
        while alive:
            pid, status = os.wait()
            alive.discard(pid)
            if not stopping:
                log.error("manager worker %d exited (status %d); stopping the others", pid,
                          os.waitstatus_to_exitcode(status))
                code = 1
                stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()
    return code


def _load_verifier(spec: str, workspace: Path):
    import importlib

    module, _, factory = spec.partition(":")
    if not factory:
        raise AttributeError(f"--verifier {spec!r}: expected MODULE:FACTORY.")
    return getattr(importlib.import_module(module), factory)(workspace)


if __name__ == "__main__":
    sys.exit(main())
