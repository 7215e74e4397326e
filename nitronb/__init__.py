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
    "upload_file": "storage", "download_file": "storage", "presign_download": "presign",
    "presign_upload": "presign", "credentials_json": "presign", "Dataset": "datasets",
    # the manager, attestation, images and runs
    "CCMClient": "ccm", "verify_document": "attestation", "LocalNSM": "nsm",
    "prepare_process_image": "image", "build_app_image": "image",
    "convert_to_enclave_image": "image", "run_enclave": "runner",
    "RunResult": "results", "decrypt_run_result": "results",
}

__all__ = ["__version__", "NitronbError", "DecryptionError", "KeyFileError", "sample_path",
           *_LAZY]


def sample_path() -> Path:
    """The shipped demo input: Synthea's ``conditions.csv`` (see ``data/PROVENANCE.md``)."""
    from importlib import resources

    return Path(str(resources.files("nitronb") / "data" / "conditions.csv"))


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nitronb' has no attribute {name!r}")
    value = getattr(import_module(f"nitronb.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
