"""``nitronb upload | download | presign``: objects in S3 or the embedded local endpoint."""

from __future__ import annotations

import argparse
import json
import sys

ORDER = 30

_PROFILE_HELP = "'local' for the embedded endpoint (default), else a boto3 profile"


def _endpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint-url", metavar="URL",
                   help="any S3-compatible endpoint (with the profile's credentials)")


def register(sub: argparse._SubParsersAction) -> None:
    up = sub.add_parser("upload", help="upload a file to an S3 directory",
                        description="Upload FILE into S3DIR (s3://BUCKET/PREFIX/), multipart "
                                    "and integrity-checked. Prints the object's s3:// URI.")
    up.add_argument("--profile", default="local", help=_PROFILE_HELP)
    up.add_argument("--name", metavar="OBJECT", help="object name (default: the file's name)")
    _endpoint(up)
    up.add_argument("file", metavar="FILE")
    up.add_argument("s3dir", metavar="S3DIR")
    up.set_defaults(handler=run_upload)

    down = sub.add_parser("download", help="download an S3 object to a file",
                          description="Download S3URI (s3://BUCKET/KEY) into FILE, atomically "
                                      "and integrity-checked.")
    down.add_argument("--profile", default="local", help=_PROFILE_HELP)
    _endpoint(down)
    down.add_argument("s3uri", metavar="S3URI")
    down.add_argument("file", metavar="FILE")
    down.set_defaults(handler=run_download)

    pre = sub.add_parser("presign", help="presign a download (GET) or upload (PUT) URL",
                         description="Presign a URL for OBJECT in S3DIR valid EXPIRY_SECONDS, "
                                     "and print it, its location and its query string in "
                                     "base64 (the form dataset credentials carry).")
    pre.add_argument("profile", metavar="PROFILE", help=_PROFILE_HELP)
    pre.add_argument("action", choices=("download", "upload"))
    pre.add_argument("s3dir", metavar="S3DIR")
    pre.add_argument("object", metavar="OBJECT")
    pre.add_argument("expiry", metavar="EXPIRY_SECONDS", type=int)
    pre.add_argument("--legacy", action="store_true",
                     help="the legacy query form (AWSAccessKeyId, Signature, Expires)")
    pre.add_argument("--json", action="store_true",
                     help='print one JSON object {"url", "location", "query_string"}')
    pre.add_argument("-o", "--out", metavar="FILE",
                     help="write the output to FILE (mode 0600: the URL is a bearer token) "
                          "instead of printing it")
    pre.add_argument("-f", "--force", action="store_true", help="replace FILE if it exists")
    _endpoint(pre)
    pre.set_defaults(handler=run_presign)


def run_upload(args: argparse.Namespace) -> int:
    from nitronb.s3.transfers import upload_file

    s3dir = args.s3dir if args.s3dir.endswith("/") else args.s3dir + "/"
    uri = upload_file(args.file, s3dir, profile=args.profile, key_name=args.name,
                      endpoint_url=args.endpoint_url)
    print(uri)
    return 0


def run_download(args: argparse.Namespace) -> int:
    from nitronb.s3.transfers import download_file

    target = download_file(args.s3uri, args.file, profile=args.profile,
                           endpoint_url=args.endpoint_url)
    print(f"downloaded {args.s3uri} to {target}", file=sys.stderr)
    return 0


def run_presign(args: argparse.Namespace) -> int:
    from nitronb.s3.presign import presign_download, presign_upload

    verb = presign_download if args.action == "download" else presign_upload
    signed = verb(args.profile, args.s3dir, args.object, args.expiry, legacy=args.legacy,
                  endpoint_url=args.endpoint_url)
    if args.json:
        text = json.dumps(signed.as_dict()) + "\n"
    else:
        text = (f"URL: {signed.url}\n"
                f"location: {signed.location}\n"
                f"query string (base64): {signed.query_string_b64}\n")
    if args.out is None or args.out == "-":
        sys.stdout.write(text)
        return 0
    _write_private(args.out, text, force=args.force)
    print(f"wrote the presigned {args.action} URL for {signed.location} to {args.out} "
          "(mode 0600)", file=sys.stderr)
    return 0


def _write_private(path: str, text: str, *, force: bool) -> None:
    """``text`` into ``path``, mode 0600, atomically; an existing ``path`` is kept unless
    ``force`` (:class:`~nitronb.errors.OutputExistsError`)."""
    import os

    from nitronb._files import write_atomic
    from nitronb.errors import OutputExistsError

    if not force and os.path.lexists(path):
        raise OutputExistsError(path, hint="Choose another FILE, or replace it with --force.")
    write_atomic(path, text.encode("utf-8"), mode=0o600)
