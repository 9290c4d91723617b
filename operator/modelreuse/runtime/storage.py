"""Reading and writing artifacts at any fsspec URI (file, memory, s3, gcs, http), and their digests."""

from __future__ import annotations

import hashlib
from typing import IO

import fsspec

from modelreuse.runtime.errors import WorkloadError

_CHUNK = 1 << 20


def open_uri(uri: str, mode: str = "rb") -> IO:
    """Open a URI or plain path; an unreadable one raises WorkloadError(UnreadableUri)."""
    try:
        return fsspec.open(uri, mode).open()
    except (OSError, ValueError, ImportError) as exc:
        raise WorkloadError("UnreadableUri", f"Cannot open {uri}: {exc}. Check the URI and its credentials.") from exc


def read_bytes(uri: str) -> bytes:
    with open_uri(uri) as fh:
        return fh.read()


def write_bytes(uri: str, payload: bytes) -> None:
    fs, path = fsspec.core.url_to_fs(uri)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as fh:
        fh.write(payload)


def sha256_of(uri: str) -> str:
    """Hex sha256 of the file at a URI, streamed."""
    digest = hashlib.sha256()
    with open_uri(uri) as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(uri: str, expected: str | None, payload: bytes | None = None) -> str:
    """Return ``sha256:<hex>`` of the file; raise DigestMismatch when a pinned digest differs."""
    actual = hashlib.sha256(payload).hexdigest() if payload is not None else sha256_of(uri)
    if expected and actual != expected.lower():
        raise WorkloadError(
            "DigestMismatch",
            f"The model at {uri} has sha256 {actual}, not the pinned {expected}; "
            "fix source.sha256 or restore the expected file.",
        )
    return f"sha256:{actual}"
