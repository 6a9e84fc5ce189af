"""Environment-driven settings of the hub, read at call time (never cached at import).

Reading ``os.environ`` on every call is deliberate: tests and long-running processes change
these variables after ``zoo`` has been imported, and huggingface_hub's habit of freezing
``HF_ENDPOINT`` at import time is exactly the kind of surprise we avoid here.

=====================  =================================================================
``ZOO_HOME``           cache root (default ``$XDG_CACHE_HOME/zoo`` or ``~/.cache/zoo``)
``ZOO_OFFLINE``        ``1/true/yes/on``: no network at all (``HF_HUB_OFFLINE`` works too)
``ZOO_MIRROR``         mirrors tried before the original sources: URL prefixes or local
                       directories, separated by ``os.pathsep`` (or ``;``)
``ZOO_QUIET``          ``1``: never show progress bars
``ZOO_TIMEOUT``        ``CONNECT,READ`` seconds (default ``10,60``), or one number for both
``ZOO_RETRIES``        retries per source on transient errors (default 4)
``ZOO_RETRY_BACKOFF``  base of the exponential backoff in seconds (default 1.0)
``ZOO_DEADLINE``       overall time limit of one fetch in seconds (default 3600), lock waits
                       (download and conversion) and slow bodies included
``ZOO_MAX_DOWNLOAD``   largest body accepted for a file without a declared size (default 4 GiB)
=====================  =================================================================
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

_TRUE = frozenset({"1", "true", "yes", "on"})

DEFAULT_TIMEOUT = (10.0, 60.0)
DEFAULT_RETRIES = 4
DEFAULT_BACKOFF = 1.0
DEFAULT_DEADLINE = 3600.0
DEFAULT_MAX_DOWNLOAD = 4 << 30


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r} must not be negative")
    return value


def zoo_home() -> Path:
    """Root of everything zoo stores: ``$ZOO_HOME``, else ``$XDG_CACHE_HOME/zoo``, else
    ``~/.cache/zoo``."""
    explicit = os.environ.get("ZOO_HOME")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "zoo"


def cache_dir() -> Path:
    """Directory holding downloaded files: ``zoo_home() / "files"``."""
    return zoo_home() / "files"


def is_offline() -> bool:
    """True when ``ZOO_OFFLINE`` or ``HF_HUB_OFFLINE`` is truthy: no network requests."""
    return env_flag("ZOO_OFFLINE") or env_flag("HF_HUB_OFFLINE")


def quiet_default(quiet: bool | None) -> bool:
    """Resolve the ``quiet`` argument: ZOO_QUIET wins, then the argument, then "is stderr a
    terminal" (progress bars in CI logs are noise)."""
    if env_flag("ZOO_QUIET"):
        return True
    if quiet is not None:
        return quiet
    try:
        return not sys.stderr.isatty()
    except (AttributeError, ValueError):  # stderr replaced or closed
        return True


def timeouts() -> tuple[float, float]:
    """``(connect, read)`` timeouts for requests."""
    raw = os.environ.get("ZOO_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        values = [float(v) for v in raw.split(",")]
    except ValueError:
        raise ValueError(f"ZOO_TIMEOUT={raw!r}: expected CONNECT,READ seconds") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) <= 0:
        raise ValueError(f"ZOO_TIMEOUT={raw!r}: expected CONNECT,READ seconds")
    return values[0], values[1]


def retries() -> int:
    return int(_env_float("ZOO_RETRIES", DEFAULT_RETRIES))


def retry_backoff() -> float:
    return _env_float("ZOO_RETRY_BACKOFF", DEFAULT_BACKOFF)


def max_download_bytes() -> int:
    """Largest body accepted for a file whose size no manifest declares (``ZOO_MAX_DOWNLOAD``,
    bytes, default 4 GiB): a hostile or broken server must not fill the disk."""
    return int(_env_float("ZOO_MAX_DOWNLOAD", DEFAULT_MAX_DOWNLOAD))


def default_deadline() -> float:
    return _env_float("ZOO_DEADLINE", DEFAULT_DEADLINE)


# On POSIX os.pathsep is ":" which also appears in "http://host:8080". Split only at a ":"
# that starts a new absolute path ("/x" but not "//"), a home path ("~") or a new URL scheme.
_POSIX_MIRROR_SPLIT = re.compile(r":(?=/(?!/)|~|[A-Za-z][A-Za-z0-9+.-]*://)")


def mirrors() -> list[str]:
    """Entries of ``ZOO_MIRROR`` in order (URL prefixes or local directories)."""
    raw = os.environ.get("ZOO_MIRROR", "").strip()
    if not raw:
        return []
    items: list[str] = []
    for chunk in re.split(r"[;\n]+", raw):
        if os.pathsep == ":":
            items.extend(_POSIX_MIRROR_SPLIT.split(chunk))
        else:
            items.append(chunk)
    return [item.strip() for item in items if item.strip()]
