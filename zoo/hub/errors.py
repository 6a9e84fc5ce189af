"""One exception hierarchy for everything in :mod:`zoo.hub`.

Callers (the weights loader, the CLI) catch :class:`FetchError` to handle any hub failure,
or a subclass when they care about the reason::

    FetchError
    ├── AllSourcesFailedError     every source was tried and none worked
    ├── HashMismatchError         bytes arrived but failed size/sha256/sha1 verification
    ├── OfflineError              ZOO_OFFLINE/HF_HUB_OFFLINE is set and the file is not local
    ├── DeadlineExceededError     the overall deadline ran out (download or lock wait)
    └── ArchiveError              a zip/tar could not be read or extracted
        └── UnsafeArchiveError    a member would escape the destination, is a link, or is too big
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

Attempt = tuple[str, str]
"""``(source, reason)``: one line of the "what did we try" report in error messages."""


def redact(url: str) -> str:
    """Drop ``user:password@`` from a URL so credentials never end up in logs or errors."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def format_attempts(attempts: Sequence[Attempt]) -> str:
    return "; ".join(f"{redact(src)}: {reason}" for src, reason in attempts) or "no sources"


class FetchError(Exception):
    """Base class of every error raised by :mod:`zoo.hub`."""

    def __init__(self, message: str, attempts: Sequence[Attempt] = ()) -> None:
        super().__init__(message)
        self.attempts: list[Attempt] = list(attempts)


class AllSourcesFailedError(FetchError):
    """No source delivered the file; ``attempts`` holds every source and its reason."""

    def __init__(self, filename: str, attempts: Sequence[Attempt]) -> None:
        super().__init__(
            f"could not fetch {filename!r}; tried {len(attempts)} source(s): "
            f"{format_attempts(attempts)}",
            attempts,
        )
        self.filename = filename


class HashMismatchError(FetchError):
    """Downloaded (or cached, or extracted) bytes do not match the expected digest or size.

    ``algorithm`` is ``"sha256"``, ``"sha1"`` or ``"size"``.
    """

    def __init__(
        self,
        url: str,
        algorithm: str,
        expected: str,
        actual: str,
        *,
        note: str = "",
        attempts: Sequence[Attempt] = (),
    ) -> None:
        message = f"{algorithm} mismatch for {redact(url)}: expected {expected}, got {actual}"
        if note:
            message += f" ({note})"
        if len(attempts) > 1:
            message += f"; all sources failed: {format_attempts(attempts)}"
        super().__init__(message, attempts)
        self.url = url
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual
        self.note = note

    def with_attempts(self, attempts: Sequence[Attempt]) -> HashMismatchError:
        """Same mismatch, re-raised at the end of ``fetch`` with the full list of sources."""
        return HashMismatchError(
            self.url,
            self.algorithm,
            self.expected,
            self.actual,
            note=self.note,
            attempts=attempts,
        )


class OfflineError(FetchError):
    """Offline mode is on and the file is neither cached nor in a local mirror."""


class DeadlineExceededError(FetchError):
    """The overall ``deadline`` of a fetch ran out."""


class ArchiveError(FetchError):
    """A zip/tar archive is unreadable, or a requested member is missing."""


class UnsafeArchiveError(ArchiveError):
    """An archive member would escape the destination, is a link/device, or breaks a limit."""
