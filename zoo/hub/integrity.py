"""Hash/size normalisation and file verification, shared by fetch, the cache and archives."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import HashMismatchError

_HEX = re.compile(r"[0-9a-f]+")
MIN_SHA256_PREFIX = 8  # torchvision embeds 8 hex digits in filenames; less is guessable
_CHUNK = 1 << 20


def normalize_sha256(value: str | None) -> str | None:
    """Lower-case a sha256 hex digest or prefix (>= 8 hex digits); ``ValueError`` otherwise."""
    if value is None:
        return None
    digest = str(value).strip().lower()
    if not _HEX.fullmatch(digest) or len(digest) > 64:
        raise ValueError(f"sha256 must be hexadecimal with at most 64 digits, got {value!r}")
    if len(digest) < MIN_SHA256_PREFIX:
        raise ValueError(
            f"sha256 prefix {value!r} is too short: give at least {MIN_SHA256_PREFIX} hex digits"
        )
    return digest


def normalize_sha1(value: str | None) -> str | None:
    """Lower-case a full sha1 hex digest (40 digits); ``ValueError`` otherwise."""
    if value is None:
        return None
    digest = str(value).strip().lower()
    if not _HEX.fullmatch(digest) or len(digest) != 40:
        raise ValueError(f"sha1 must be a full 40-digit hex digest, got {value!r}")
    return digest


def normalize_size(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"size must be a non-negative int, got {value!r}")
    return value


@dataclass(frozen=True)
class FileDigest:
    """What :func:`verify_file` measured: always the full sha256, sha1 only when asked."""

    size: int
    sha256: str
    sha1: str | None = None


def hash_file(path: str | os.PathLike[str], *, sha1: bool = False) -> FileDigest:
    h256 = hashlib.sha256()
    h1 = hashlib.sha1(usedforsecurity=False) if sha1 else None
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            size += len(chunk)
            h256.update(chunk)
            if h1 is not None:
                h1.update(chunk)
    return FileDigest(size, h256.hexdigest(), h1.hexdigest() if h1 is not None else None)


def verify_file(
    path: str | os.PathLike[str],
    sha256: str | None = None,
    sha1: str | None = None,
    size: int | None = None,
    *,
    source: str | None = None,
) -> FileDigest:
    """Check ``path`` against the expected size and digests; return what was measured.

    ``sha256`` may be a prefix (>= 8 hex digits). Raises :class:`HashMismatchError` naming
    ``source`` (default: the path) on the first mismatch. The size is compared before hashing
    so a truncated multi-GB file fails instantly.
    """
    sha256 = normalize_sha256(sha256)
    sha1 = normalize_sha1(sha1)
    size = normalize_size(size)
    where = source or str(path)
    actual_size = Path(path).stat().st_size
    if size is not None and actual_size != size:
        raise HashMismatchError(where, "size", str(size), str(actual_size))
    digest = hash_file(path, sha1=sha1 is not None)
    if sha256 is not None and not digest.sha256.startswith(sha256):
        raise HashMismatchError(where, "sha256", sha256, digest.sha256)
    if sha1 is not None and digest.sha1 != sha1:
        raise HashMismatchError(where, "sha1", sha1, str(digest.sha1))
    return digest
