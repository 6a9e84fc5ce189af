"""Stream one HTTP(S) URL into a partial file: timeouts, retries with backoff, Range resume.

The caller holds the per-file lock; this module never touches the final cache name.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import random
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3
from tqdm.auto import tqdm

from . import config
from .errors import DeadlineExceededError, HashMismatchError, redact

log = logging.getLogger(__name__)

# Small enough that a killed process loses little and progress is smooth on slow links, big
# enough that the Python loop costs nothing next to the network.
CHUNK = 64 * 1024
_MAX_BACKOFF = 30.0
_MAX_RESTARTS = 2
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class SourceFailed(Exception):
    """This source cannot deliver the file; move on to the next one (``reason`` says why)."""


class _TooBig(SourceFailed):
    """More bytes than any limit allows: what arrived is useless, even to resume."""


class _Transient(Exception):
    """Worth retrying the same source after a backoff (5xx, reset, truncation, timeout)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _RestartFromZero(Exception):
    """The server cannot continue our partial file (416, wrong Content-Range)."""


@dataclass(frozen=True)
class Deadline:
    """Absolute ``time.monotonic()`` limit shared by every step of one fetch."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def check(self, doing: str) -> None:
        if self.remaining() <= 0:
            raise DeadlineExceededError(f"deadline exceeded while {doing}")


@dataclass(frozen=True)
class Settings:
    session: requests.Session
    deadline: Deadline
    quiet: bool
    timeouts: tuple[float, float]
    retries: int
    backoff: float
    max_bytes: int  # cap on a body whose size nobody declared

    @classmethod
    def from_env(cls, session: requests.Session, deadline: Deadline, quiet: bool) -> Settings:
        return cls(
            session, deadline, quiet, config.timeouts(), config.retries(), config.retry_backoff(),
            config.max_download_bytes(),
        )  # fmt: skip

    def request_timeout(self) -> tuple[float, float]:
        # Never let one blocking socket call outlive the overall deadline.
        left = max(self.deadline.remaining(), 0.05)
        return min(self.timeouts[0], left), min(self.timeouts[1], left)


def new_session() -> requests.Session:
    session = requests.Session()
    # trust_env keeps HTTP(S)_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE, SSL_CERT_FILE and .netrc.
    session.trust_env = True
    session.headers["User-Agent"] = f"zoo-hub (requests/{requests.__version__})"
    # Byte offsets of Range requests refer to the encoded body: insist on the raw bytes.
    session.headers["Accept-Encoding"] = "identity"
    return session


def _unreachable_reason(exc: BaseException) -> str | None:
    """ "connection refused"/"DNS lookup failed" if that is buried in ``exc``'s chain, since
    retrying those only wastes the user's time: the next source is tried at once."""
    stack: list[object] = [exc]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        if isinstance(item, socket.gaierror) or type(item).__name__ == "NameResolutionError":
            return f"DNS lookup failed ({item})"
        stack.extend([item.__cause__, item.__context__, getattr(item, "reason", None), *item.args])
    return None


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.strip().isdigit() else None


def _open(url: str, offset: int, headers: dict[str, str], s: Settings) -> requests.Response:
    headers = dict(headers)
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return s.session.get(url, headers=headers, stream=True, timeout=s.request_timeout())
    except (
        requests.exceptions.InvalidURL,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidSchema,
    ) as exc:
        raise SourceFailed(f"invalid URL ({exc})") from exc
    except requests.exceptions.TooManyRedirects as exc:
        raise SourceFailed("too many redirects") from exc
    except requests.exceptions.SSLError as exc:
        # A bad certificate does not fix itself in a few seconds; REQUESTS_CA_BUNDLE might.
        raise SourceFailed(f"TLS error ({exc}); check REQUESTS_CA_BUNDLE/SSL_CERT_FILE") from exc
    except requests.exceptions.Timeout as exc:
        raise _Transient("timed out") from exc
    except requests.exceptions.RequestException as exc:
        unreachable = _unreachable_reason(exc)
        if unreachable:
            raise SourceFailed(unreachable) from exc
        raise _Transient(f"connection error ({type(exc).__name__})") from exc


def _body_start(response: requests.Response, offset: int) -> int:
    """Where the body we are about to read starts in the file, from the status code."""
    status = response.status_code
    if status == 206 and offset:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != offset:
            raise _RestartFromZero  # a range we did not ask for: trust nothing, start over
        return offset
    if status == 200:
        return 0  # server ignored Range: the body is the whole file again
    if status == 416 and offset:
        raise _RestartFromZero
    if status in (408, 429) or status >= 500:
        raise _Transient(f"HTTP {status}", _retry_after(response))
    raise SourceFailed(f"HTTP {status}")


def _total_size(response: requests.Response, start: int) -> int | None:
    length = response.headers.get("Content-Length", "")
    return start + int(length) if length.isdigit() else None


def _download_once(
    url: str,
    part: Path,
    offset: int,
    *,
    label: str,
    filename: str,
    expected_size: int | None,
    headers: dict[str, str],
    s: Settings,
) -> None:
    with _open(url, offset, headers, s) as response:
        start = _body_start(response, offset)
        total = _total_size(response, start)
        if expected_size is not None and total is not None and total != expected_size:
            # Don't spend an hour downloading something that cannot be the right file.
            raise HashMismatchError(label, "size", str(expected_size), f"{total} (Content-Length)")
        bar = tqdm(
            total=total,
            initial=start,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=filename,
            disable=s.quiet,
            leave=False,
        )
        limit = expected_size if expected_size is not None else s.max_bytes
        if total is not None and total > limit:
            raise _TooBig(_too_big(total, limit))
        with open(part, "ab" if start else "wb") as out, bar:
            received = start
            while True:
                try:
                    # read1: whatever one recv() gives, so that a server dripping a byte at a
                    # time cannot hold us past the deadline while a 64 KiB chunk fills up.
                    chunk = response.raw.read1(CHUNK, decode_content=True)
                    if not chunk:
                        break
                except (
                    requests.exceptions.RequestException,
                    urllib3.exceptions.HTTPError,
                    http.client.HTTPException,
                    ConnectionError,
                    TimeoutError,
                ) as exc:
                    raise _Transient(
                        f"connection broken after {received} bytes ({type(exc).__name__})"
                    ) from exc
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
                if expected_size is not None and received > expected_size:
                    raise HashMismatchError(
                        label, "size", str(expected_size), f"more than {expected_size} bytes"
                    )
                if received > limit:
                    raise _TooBig(_too_big(received, limit))
                s.deadline.check(f"downloading {redact(url)}")
            out.flush()
            os.fsync(out.fileno())  # the final name must never point at unwritten blocks
    if total is not None and received < total:
        raise _Transient(f"truncated: got {received} of {total} bytes")


def _too_big(size: int, limit: int) -> str:
    return (
        f"body of {size} bytes or more exceeds the limit of {limit} bytes for a file without a "
        f"declared size (ZOO_MAX_DOWNLOAD; a manifest's 'size' sets a file's own)"
    )


def download(
    url: str,
    part: Path,
    *,
    label: str,
    filename: str,
    expected_size: int | None,
    resume: bool,
    headers: dict[str, str],
    settings: Settings,
) -> bool:
    """Download ``url`` into ``part``; return whether it continued an existing partial file.

    Raises :class:`SourceFailed` (try the next source), :class:`HashMismatchError` (size is
    known to be wrong) or :class:`DeadlineExceededError`.
    """
    s = settings
    failures = 0
    restarts = 0
    resumed = False
    while True:
        s.deadline.check(f"downloading {redact(url)}")
        offset = part.stat().st_size if part.exists() else 0
        if offset and (not resume or (expected_size is not None and offset > expected_size)):
            part.unlink()
            offset = 0
        if offset and offset == expected_size:
            return True  # a killed process got every byte; verification decides
        resumed = resumed or offset > 0
        try:
            _download_once(
                url,
                part,
                offset,
                label=label,
                filename=filename,
                expected_size=expected_size,
                headers=headers,
                s=s,
            )
            return resumed
        except _TooBig:
            part.unlink(missing_ok=True)
            raise
        except _RestartFromZero:
            restarts += 1
            if restarts > _MAX_RESTARTS:
                raise SourceFailed("server keeps rejecting range requests") from None
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        except _Transient as exc:
            failures += 1
            if failures > s.retries:
                raise SourceFailed(f"{exc} (gave up after {failures} attempts)") from None
            delay = min(_MAX_BACKOFF, s.backoff * 2 ** (failures - 1))
            delay *= random.uniform(0.5, 1.0)  # jitter: N clients must not retry in lockstep
            if exc.retry_after is not None:
                delay = max(delay, min(exc.retry_after, _MAX_BACKOFF))
            if delay >= s.deadline.remaining():
                raise DeadlineExceededError(
                    f"deadline exceeded while retrying {redact(url)} after: {exc}"
                ) from None
            log.warning(
                "%s: %s; retry %d/%d in %.2fs", redact(url), exc, failures, s.retries, delay
            )
            time.sleep(delay)
