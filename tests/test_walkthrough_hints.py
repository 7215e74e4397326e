"""The advice 08 gives when the enclave uploaded no result: the store's refusals and the
manager's are told apart."""

from __future__ import annotations

from nitronb.notebook.checks import run_failure_hint

_MANAGER = ("[enclave-os] refused: provisioning by the manager refused (HTTP 403): workflow "
            "'describe' version 1 (fin-1) ")


def test_the_stores_refusals_get_the_presigned_url_hint():
    for line in ("start.py: error: downloading the input dataset 'input' failed: HTTP 403 "
                 "(AccessDenied).",
                 "start.py: error: uploading the result failed: HTTP 403 "
                 "(SignatureDoesNotMatch).",
                 "start.py: error: the request has expired"):
        assert "presigned URL" in run_failure_hint(line, {}, refused=False), line


def test_the_managers_refusals_say_what_to_do_about_the_approval():
    withdrawn = run_failure_hint(_MANAGER + "was withdrawn by data-owner at 2026-12-01T04:00:00Z: "
                                 "the URL expired, 403 from us", {}, refused=True)
    assert "withdrawn" in withdrawn and "run 07 again" in withdrawn
    assert "presigned" not in withdrawn
    superseded = run_failure_hint(_MANAGER + "was superseded by version 2; version 2 is the one "
                                  "that runs now.", {}, refused=True)
    assert "newer version" in superseded and "presigned" not in superseded
    for line in ("[enclave-os] refused: provisioning by the manager refused (HTTP 403): build "
                 "task tsk-1 (nitronb/describe-app) was revoked by admin at 2026: bad",
                 "[enclave-os] refused: provisioning by the manager refused (HTTP 403): the "
                 "measurements of build bld-2 were revoked by admin at 2026 (build task tsk-1): x"):
        revoked = run_failure_hint(line, {}, refused=True)
        assert "administrator revoked" in revoked and "presigned" not in revoked
    pending = run_failure_hint("[enclave-os] refused: provisioning by the manager refused (HTTP "
                               "403): build task tsk-1 (img) is PENDING; an administrator must "
                               "approve it before the enclave can run.", {}, refused=True)
    assert "approve it (05)" in pending
