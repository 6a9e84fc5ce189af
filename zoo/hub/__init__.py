"""Robust file fetching and caching for the zoo (no torch import here, on purpose).

``fetch`` downloads into ``$ZOO_HOME/files/<hash-dir>/<filename>`` under a per-file lock with
resume, retries, mirrors, offline mode, hash verification and trust on first use; see
:mod:`zoo.hub.fetch` for the guarantees and :mod:`zoo.hub.cache` for the layout.
"""

from __future__ import annotations

from .archive import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MEMBERS,
    extract_all,
    extract_member,
    safe_member_path,
)
from .cache import (
    CacheEntry,
    TofuRecord,
    VerifyResult,
    cache_entries,
    cache_key,
    confirm_recorded,
    drop_provisional,
    forget_matching,
    forget_recorded,
    recorded_hash,
    remove_cached,
    validate_filename,
    verify_cache,
)
from .config import cache_dir, is_offline, zoo_home
from .errors import (
    AllSourcesFailedError,
    ArchiveError,
    DeadlineExceededError,
    FetchError,
    HashMismatchError,
    OfflineError,
    UnsafeArchiveError,
)
from .fetch import cached_copy, fetch
from .integrity import FileDigest, hash_file, verify_file

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_MEMBERS",
    "AllSourcesFailedError",
    "ArchiveError",
    "CacheEntry",
    "DeadlineExceededError",
    "FetchError",
    "FileDigest",
    "HashMismatchError",
    "OfflineError",
    "TofuRecord",
    "UnsafeArchiveError",
    "VerifyResult",
    "cache_dir",
    "cache_entries",
    "cache_key",
    "cached_copy",
    "confirm_recorded",
    "drop_provisional",
    "extract_all",
    "extract_member",
    "fetch",
    "forget_matching",
    "forget_recorded",
    "hash_file",
    "is_offline",
    "recorded_hash",
    "remove_cached",
    "safe_member_path",
    "validate_filename",
    "verify_cache",
    "verify_file",
    "zoo_home",
]
