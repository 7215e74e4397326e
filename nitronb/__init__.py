"""nitronb: the Nitro Workflow of a confidential computing manager, walked through in notebooks.

The public verbs are re-exported here and loaded on first use, so that ``import nitronb`` (and
the command line's start) stays light; everything else is private by name or by module.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from nitronb.errors import DecryptionError, KeyFileError, NitronbError

__version__ = "0.1.0"

#: public name -> the module that defines it
_LAZY = {
    # keys and the encrypted-file format
    "generate_key": "keys", "read_key_file": "keys", "write_key_file": "keys", "redact": "keys",
    "fingerprint": "keys",
    "encrypt_file": "crypto", "decrypt_file": "crypto", "encrypt_bytes": "crypto",
    "decrypt_bytes": "crypto", "encrypt_stream": "crypto", "decrypt_stream": "crypto",
    # object store and datasets
    "upload_file": "s3.transfers", "download_file": "s3.transfers",
    "presign_download": "s3.presign", "presign_upload": "s3.presign",
    "credentials_json": "s3.presign", "Dataset": "datasets",
    # the manager, attestation, images and runs
    "CCMClient": "ccm", "verify_document": "enclave.verification", "LocalNSM": "enclave.nsm",
    "prepare_process_image": "enclave.process_image", "build_app_image": "enclave.image",
    "convert_to_enclave_image": "enclave.image", "run_enclave": "enclave.runner",
    "RunResult": "results", "decrypt_run_result": "results",
}

__all__ = ["__version__", "NitronbError", "DecryptionError", "KeyFileError", "sample_path",
           "steps", *_LAZY]


def sample_path() -> Path:
    """The shipped demo input: Synthea's ``conditions.csv`` (see ``data/PROVENANCE.md``)."""
    from importlib import resources

    return Path(str(resources.files("nitronb") / "data" / "conditions.csv"))


#: modules named from ``nitronb`` itself: the notebooks' ``from nitronb import steps``
_MODULES = {"steps": "notebook.steps"}


def __getattr__(name: str):
    if name in _MODULES:
        value = import_module(f"nitronb.{_MODULES[name]}")
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nitronb' has no attribute {name!r}")
    value = getattr(import_module(f"nitronb.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
