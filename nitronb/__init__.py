"""nitronb: the Nitro Workflow of a confidential computing manager, walked through in notebooks.

The public verbs are re-exported here; everything else is private by name or by module.
"""

from __future__ import annotations

from pathlib import Path

from nitronb.errors import DecryptionError, KeyFileError, NitronbError

__version__ = "0.1.0"

__all__ = [
    "__version__", "NitronbError", "DecryptionError", "KeyFileError",
    "generate_key", "read_key_file", "write_key_file", "redact",
    "encrypt_file", "decrypt_file", "encrypt_bytes", "decrypt_bytes",
    "sample_path",
]


def sample_path() -> Path:
    """The shipped demo input: Synthea's ``conditions.csv`` (see ``data/PROVENANCE.md``)."""
    from importlib import resources

    return Path(str(resources.files("nitronb") / "data" / "conditions.csv"))


def __getattr__(name: str):
    # keys and crypto load cryptography: keep ``import nitronb`` (and the CLI's start) light
    if name in ("generate_key", "read_key_file", "write_key_file", "redact"):
        from nitronb import keys

        return getattr(keys, name)
    if name in ("encrypt_file", "decrypt_file", "encrypt_bytes", "decrypt_bytes"):
        from nitronb import crypto

        return getattr(crypto, name)
    raise AttributeError(f"module 'nitronb' has no attribute {name!r}")
