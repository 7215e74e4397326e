"""Every error nitronb raises on purpose, under one root.

Each class is a failure a user can act on; its message says what happened and what to do next.
Structured fields (``path``, ``url``, ``status`` …) are kept on the instance for programs.
"""

from __future__ import annotations

from pathlib import Path


class NitronbError(Exception):
    """Root of every error nitronb raises on purpose."""

    #: exit code used by the command line for this kind of failure
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message} {hint}")

    def _render_traceback_(self) -> list[str]:
        """What IPython and Jupyter show for this error in a notebook: ``ClassName: message``
        and the hint, instead of a traceback through nitronb's internals (which stays
        available to ``%debug``). Kernels store these lines as the error output's traceback;
        ``ename`` and ``evalue`` are the class name and ``str(error)`` as usual."""
        lines = [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self.message}"]
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return lines


# --- keys and files -------------------------------------------------------------------------


class KeyFileError(NitronbError):
    """A key (file or value) is missing, unreadable or not 32 bytes of hex."""

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None):
        self.path = None if path is None else str(path)
        super().__init__(message, hint=hint)


class OutputExistsError(NitronbError):
    """Refusing to overwrite an existing file that was not meant to be replaced."""

    def __init__(self, path: str | Path, *, hint: str | None = None):
        self.path = str(path)
        super().__init__(f"{path} already exists; not overwriting it.",
                         hint=hint or "Choose another path, or ask for it to be replaced.")


class SameFileError(NitronbError):
    """The output path names the input file."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        super().__init__(f"the output would overwrite the input {path}.",
                         hint="Write the result to another file.")


class DecryptionError(NitronbError):
    """Authentication failed: wrong key, tampered or truncated data. No plaintext is released."""

    def __init__(self, message: str, *, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        super().__init__(message)


class ResultDecryptionError(DecryptionError):
    """The run result does not decrypt with the output owner's key (``path`` is its file; the
    message names it relative to the workspace); the hint says which steps make a readable
    one."""

    def __init__(self, message: str, *, path: str | Path | None = None,
                 hint: str | None = None):
        self.path = None if path is None else str(path)
        NitronbError.__init__(self, message, hint=hint)


class UnsafeNameError(NitronbError):
    """A name or path would escape the folder it belongs to (``/``, ``..``, NUL, absolute)."""

    def __init__(self, name: str, *, what: str = "name"):
        self.name = name
        super().__init__(f"unsafe {what} {name!r}: it must not contain '/', '..', NUL or be absolute.")


# --- storage --------------------------------------------------------------------------------


class StorageError(NitronbError):
    """An object-store operation failed."""

    def __init__(self, message: str, *, url: str | None = None, hint: str | None = None):
        self.url = url
        super().__init__(message, hint=hint)


class BadS3PathError(StorageError):
    """An S3 directory or URI is malformed."""


class NoSuchBucketError(StorageError):
    """The bucket does not exist."""


class NoSuchObjectError(StorageError):
    """The object does not exist."""


class PresignedURLExpiredError(StorageError):
    """A presigned URL was used after its expiry."""


class SignatureMismatchError(StorageError):
    """The store rejected a request's signature (edited URL, wrong secret, other object/method)."""


class CredentialsMissingError(StorageError):
    """No credentials were found for the chosen profile."""


class EndpointUnreachableError(StorageError):
    """The store (or the local endpoint) does not answer."""


class IntegrityError(StorageError):
    """A transfer completed but the bytes do not match (size or checksum)."""


class ManagerDatabaseError(StorageError):
    """The manager's database cannot be opened, upgraded or used by this manager; ``url`` is
    the database's URL with its password hidden."""


# --- local stack ----------------------------------------------------------------------------


class LocalStackError(NitronbError):
    """The embedded local stack could not be started, found or stopped."""


# --- the manager ----------------------------------------------------------------------------


class CCMError(NitronbError):
    """The manager refused or failed a request. ``status`` is the HTTP status it maps to."""

    status = 400

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None):
        if status is not None:
            self.status = status
        super().__init__(message, hint=hint)


class AuthenticationError(CCMError):
    """No or unknown credentials (401)."""

    status = 401


class PermissionDeniedError(CCMError):
    """Authenticated, but not allowed (403)."""

    status = 403


class NotFoundError(CCMError):
    """No such object, or not visible to this user (404)."""

    status = 404


class ConflictError(CCMError):
    """The object's state forbids the change (409): final versions, double approvals …"""

    status = 409


class ValidationError(CCMError):
    """The request is well-formed but its content is invalid (422)."""

    status = 422


class InsufficientStorageError(CCMError):
    """The manager's disk is full (507): the change was not made."""

    status = 507


class ProvisioningRefusedError(CCMError):
    """The manager refused to release a runtime configuration to an enclave (403)."""

    status = 403


class TooManyRequestsError(CCMError):
    """A client asked more than the manager's limits allow (429); it may try again later."""

    status = 429


# --- attestation, images and runs -----------------------------------------------------------


class AttestationError(NitronbError):
    """An attestation document is malformed or does not verify; ``reason`` says which check."""

    def __init__(self, message: str, *, reason: str = "invalid", hint: str | None = None):
        self.reason = reason
        super().__init__(message, hint=hint)


class EngineUnavailableError(NitronbError):
    """No container engine speaking the Docker Engine API is reachable."""


class ImageBuildError(NitronbError):
    """Building or converting an image failed."""


class RunError(NitronbError):
    """Running a workflow's enclave failed."""


class StepOrderError(NitronbError):
    """A step of the walk-through needs the product of an earlier step that has not run in this
    workspace, or that changed after a later step built on it (a key replaced, the input
    encrypted or uploaded again, the image rebuilt): the hint names the steps to run again."""


class NotebookError(NitronbError):
    """A notebook of the walk-through failed; names the notebook and the cell."""


class BatchError(NotebookError):
    """A batch of walk-through runs cannot start (its file, a run's parameters: the message
    names the run), or was interrupted."""


class InputDataError(NitronbError):
    """An input CSV the enclave's app cannot read: missing, empty, without a column the app
    reads, without rows, or not text in the declared encoding. ``path`` names the file."""

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None):
        self.path = None if path is None else str(path)
        super().__init__(message, hint=hint)


class WidgetsUnavailableError(NitronbError):
    """The interactive forms need ipywidgets, which is not installed."""
