"""``nitronb image measure|build|convert|prepare|engine``: enclave images and the engine."""

from __future__ import annotations

import argparse
import json
import sys

ORDER = 50


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("image", help="measure, build, convert or prepare the enclave image",
                       description="Build the app image, convert it into an enclave image, or "
                                   "prepare it for the process backend; every form has the same "
                                   "measurements (PCR0/1/2).")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    def common(q: argparse.ArgumentParser, *, app_dir: bool = True) -> None:
        if app_dir:
            q.add_argument("--app-dir", metavar="DIR",
                           help="the app's build context (default: enclave_image/)")
        q.add_argument("--base-image", metavar="REF",
                       help="the base image (default: $NITRONB_BASE_IMAGE or "
                            "localhost/nitronb-python-base; for `prepare`, the host's Python, "
                            "named 'python3 (host)'); it is part of PCR2")
        q.add_argument("--launcher-module", metavar="MODULE",
                       help="the launcher module the enclave image starts "
                            "(default: nitronb.enclave_os.launcher)")

    q = verbs.add_parser("measure", help="print the PCRs of the enclave image built from a folder")
    common(q)
    q.set_defaults(handler=measure)

    q = verbs.add_parser("build", help="build the app image with a container engine",
                         description="Build the app folder DIR (a Dockerfile and its files) into "
                                     "an app image, labelled with its application measurement; "
                                     "the base image measured is the one its FROM names.")
    q.add_argument("dir", nargs="?", metavar="DIR",
                   help="the app's folder (default: --app-dir, else enclave_image/)")
    common(q)
    q.add_argument("--tag", help="the app image's tag (default: localhost/nitronb-app-<folder "
                                 "name>:latest)")
    q.add_argument("-q", "--quiet", action="store_true", help="do not print the build log")
    q.set_defaults(handler=build)

    q = verbs.add_parser("convert", help="convert an app image into an enclave image")
    common(q)
    q.add_argument("app_image", metavar="APP_IMAGE", help="the app image (tag or id)")
    q.add_argument("--tag", required=True, help="the enclave image's tag")
    q.add_argument("-q", "--quiet", action="store_true", help="do not print the build log")
    q.set_defaults(handler=convert)

    q = verbs.add_parser("prepare", help="prepare the enclave image as a folder for the "
                                         "process backend")
    common(q)
    q.add_argument("--workspace", metavar="DIR", help="the workspace (default: $NITRONB_WORKSPACE, else "
                        "~/.nitronb)")
    q.set_defaults(handler=prepare)

    q = verbs.add_parser("engine", help="show the container engine; optionally start Podman "
                                        "and make the base image")
    q.add_argument("--start", action="store_true",
                   help="start Podman's Docker-API service in the workspace if none answers")
    q.add_argument("--base-image", action="store_true",
                   help="make the Debian base image in Podman if it is missing")
    q.add_argument("--workspace", metavar="DIR", help="the workspace (default: $NITRONB_WORKSPACE, else "
                        "~/.nitronb)")
    q.set_defaults(handler=engine)


def _inputs(args: argparse.Namespace) -> dict:
    from nitronb.enclave.image import default_app_dir, default_base_image
    from nitronb.enclave.measure import DEFAULT_LAUNCHER_MODULE

    return {"app_dir": (getattr(args, "dir", None) or getattr(args, "app_dir", None)
                        or default_app_dir()),
            "base_image": args.base_image or default_base_image(),
            "launcher_module": args.launcher_module or DEFAULT_LAUNCHER_MODULE}


def _log(quiet: bool):
    return None if quiet else (lambda line: print(line, file=sys.stderr, flush=True))


def _print_record(record: dict) -> None:
    print(json.dumps(record, indent=2))


def measure(args: argparse.Namespace) -> int:
    from nitronb.enclave.image import app_base_image
    from nitronb.enclave.measure import measure_build_context

    given = _inputs(args)
    base = app_base_image(given["app_dir"], given["base_image"])  # what FROM really names
    m = measure_build_context(given["app_dir"], None, base,
                              launcher_module=given["launcher_module"])
    _print_record(m.as_dict())
    return 0


def build(args: argparse.Namespace) -> int:
    import re
    from pathlib import Path

    from nitronb.enclave.image import app_base_image, build_app_image

    given = _inputs(args)
    folder = Path(given["app_dir"]).resolve()
    name = re.sub(r"[^a-z0-9._-]+", "-", folder.name.lower()).strip("-._") or "app"
    tag = args.tag or f"localhost/nitronb-app-{name}:latest"
    base = app_base_image(folder, given["base_image"])
    image_id = build_app_image(folder, tag, base_image=given["base_image"],
                               on_log=_log(args.quiet))
    print(f"built {tag} from {folder} on the base image {base}", file=sys.stderr)
    print(image_id)
    return 0


def convert(args: argparse.Namespace) -> int:
    from nitronb.enclave.image import convert_to_enclave_image

    given = _inputs(args)
    image = convert_to_enclave_image(args.app_image, args.tag, app_dir=given["app_dir"],
                                     base_image=args.base_image,
                                     launcher_module=given["launcher_module"],
                                     on_log=_log(args.quiet))
    _print_record(image.as_dict())
    return 0


def prepare(args: argparse.Namespace) -> int:
    from nitronb.enclave.process_image import prepare_process_image

    from nitronb.enclave.image import HOST_PYTHON

    given = _inputs(args)
    base = args.base_image or HOST_PYTHON
    image = prepare_process_image(given["app_dir"], None, base,
                                  launcher_module=given["launcher_module"],
                                  workspace=args.workspace)
    from nitronb.enclave.measure import tree_files
    from nitronb.enclave.sandbox import not_run_lines

    # RUN lines are measured (the Dockerfile is part of PCR2) but the process backend runs none
    record = dict(image.as_dict(),
                  not_run_by_process_backend=not_run_lines(tree_files(given["app_dir"])))
    _print_record(record)
    return 0


def engine(args: argparse.Namespace) -> int:
    from nitronb.enclave import engine as eng

    if args.start:
        eng.start_podman_service(args.workspace)
    if args.base_image:
        print(f"base image: {eng.ensure_base_image(workspace=args.workspace)}")
    client = eng.find_engine(args.workspace, timeout=10)
    if client is None:
        print("no container engine answers; tried:", *eng.engine_candidates(args.workspace),
              sep="\n  ")
        print("The process backend runs enclaves without one. To use Podman, run "
              "scripts/provision-podman.sh (as root) or `nitronb image engine --start`.")
        return 1
    version = client.version()
    print(f"engine: {client.engine_url} — {version.get('Components', [{}])[0].get('Name', '')}"
          f" {version.get('Version', '')} (API {version.get('ApiVersion', '')})".replace("  ", " "))
    return 0
