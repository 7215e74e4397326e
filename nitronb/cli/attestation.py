"""``nitronb attestation verify|show``: check or decode a Nitro attestation document."""

from __future__ import annotations

import argparse
import json
import sys

ORDER = 70


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attestation", help="verify or decode a Nitro attestation document",
                       description="Verify an AWS Nitro attestation document (COSE_Sign1, "
                                   "ES384) against trusted roots, or decode it unverified.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    v = verbs.add_parser("verify", help="verify a document; exit 0 only when it is valid",
                         description="Check the signature, the chain to a trusted root, every "
                                     "certificate's validity at a time, and optionally PCRs, "
                                     "nonce, age and key/configuration binding. Exit 0 when "
                                     "valid, 1 otherwise.")
    v.add_argument("document", metavar="DOC", help="the document (CBOR), or - for stdin")
    v.add_argument("--root", action="append", metavar="PEM",
                   help="trusted root certificate(s), PEM file; repeat for several (default: "
                        "the AWS Nitro Enclaves root certificate shipped with nitronb, "
                        "CN=aws.nitro-enclaves)")
    v.add_argument("--at", default="now", type=_at, metavar="TIME",
                   help="when certificates must be valid: ISO 8601 (UTC unless an offset is "
                        "given), 'document' for the document's own time, or 'now' (default)")
    v.add_argument("--clock-skew", type=_seconds, metavar="SECONDS",
                   help="how far this machine's clock may be off when checking certificate "
                        "validity: default 60 at 'now', 0 at an explicit TIME; --at document is "
                        "always exact")
    v.add_argument("--pcr", action="append", default=[], type=_pcr, metavar="N=HEX",
                   help="expected value of PCR N; repeat for several")
    v.add_argument("--nonce", type=_hex, metavar="HEX", help="expected nonce")
    v.add_argument("--public-key", type=_hex, metavar="HEX",
                   help="expected enclave public key (checks the user_data binding)")
    v.add_argument("--config-id", metavar="ID",
                   help="expected configuration id bound in user_data")
    v.add_argument("--max-age", type=float, metavar="SECONDS",
                   help="reject documents older than this at --at")
    v.add_argument("--allow-debug", action="store_true",
                   help="accept a document from an enclave in debug mode (its PCRs are zero, so "
                        "its contents are not attested); refused by default")
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(handler=run_verify)

    s = verbs.add_parser("show", help="decode a document WITHOUT verifying it",
                         description="Decode and print a document's fields. Nothing is "
                                     "verified: use 'verify' before trusting any of them.")
    s.add_argument("document", metavar="DOC", help="the document (CBOR), or - for stdin")
    s.add_argument("--json", action="store_true", help="print the fields as JSON")
    s.set_defaults(handler=run_show)


def run_verify(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from nitronb.enclave.attestation import aws_nitro_root, load_roots, parse_document
    from nitronb.enclave.verification import verify_document
    from nitronb.errors import AttestationError

    if args.at == "document" and args.clock_skew is not None:
        print("nitronb: error: --at document checks at the document's own time, exactly: it "
              "takes no --clock-skew.", file=sys.stderr)
        return 2
    roots = [cert for path in args.root or [aws_nitro_root()] for cert in load_roots(path)]
    data = _read(args.document)
    document = None
    error: AttestationError | None = None
    try:
        document = parse_document(data)
        verify_document(document, roots=roots, at=args.at, expected_pcrs=dict(args.pcr) or None,
                        nonce=args.nonce, public_key=args.public_key, config_id=args.config_id,
                        max_age=None if args.max_age is None else timedelta(seconds=args.max_age),
                        clock_skew=(None if args.clock_skew is None
                                    else timedelta(seconds=args.clock_skew)))
        if document.debug_mode and not args.allow_debug:
            raise AttestationError(
                "the document comes from an enclave in debug mode: its PCRs are zero, so what "
                "runs in it is not attested.", reason="debug",
                hint="Pass --allow-debug to accept it anyway (for development only).")
    except AttestationError as exc:
        error = exc
    if args.json:
        result = document.to_json() if document is not None else {}
        result.update(valid=error is None, reason=None if error is None else error.reason,
                      error=None if error is None else str(error))
        print(json.dumps(result, indent=2))
    else:
        if document is not None:
            _print_summary(document)
        if error is None:
            print("VALID")
        else:
            print(f"INVALID: {error.reason}: {error}")
    return 0 if error is None else 1


def run_show(args: argparse.Namespace) -> int:
    from nitronb.enclave.attestation import parse_document

    document = parse_document(_read(args.document))
    if args.json:
        result = document.to_json()
        result["verified"] = False
        print(json.dumps(result, indent=2))
        return 0
    print("UNVERIFIED: decoded only; run 'nitronb attestation verify' before trusting it")
    _print_summary(document)
    for index in sorted(document.pcrs):
        if index > 2 and any(document.pcrs[index]):
            print(f"PCR{index:<9}{document.pcrs[index].hex()}")
    print(f"{'certificate':<12}{document.to_json()['certificate_subject']}")
    print(f"{'cabundle':<12}{len(document.cabundle)} certificate(s)")
    return 0


def _print_summary(document) -> None:
    from nitronb.enclave.attestation import _iso

    print(f"{'module_id':<12}{document.module_id}")
    print(f"{'time':<12}{_iso(document.timestamp)}")
    for index in (0, 1, 2):
        value = document.pcr_hex(index)
        print(f"PCR{index:<9}{'absent' if value is None else value[:16] + '…'}")
    if document.debug_mode:
        print(f"{'debug_mode':<12}yes (PCRs are zero: the enclave's contents are not attested)")
    for name in ("public_key", "user_data", "nonce"):
        value = getattr(document, name)
        print(f"{name:<12}{'absent' if value is None else f'present ({len(value)} bytes)'}")
    if document.config_id is not None:
        print(f"{'config_id':<12}{document.config_id}")


def _read(path: str) -> bytes:
    from nitronb.errors import NitronbError

    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise NitronbError(f"cannot read the document {path}: {exc.strerror or exc}.") from None


def _at(text: str):
    from datetime import datetime, timezone

    if text in ("now", "document"):
        return None if text == "now" else "document"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--at {text!r} is not ISO 8601, 'document' or 'now'")
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 to 86400")
    return value


def _pcr(text: str) -> tuple[int, bytes]:
    index, sep, value = text.partition("=")
    if not sep or not index.strip().isdigit() or not 0 <= int(index) < 32:
        raise argparse.ArgumentTypeError(f"{text!r} is not N=HEX with N from 0 to 31")
    return int(index), _hex(value)


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:24]!r} is not hex") from None
