"""`zoo cache verify` beyond hashes: whether what the cache holds still converts and loads.

A hash says the bytes did not change; it cannot say they were ever good (a first download
trusted on first use may be an error page) or that they still load. So verify also:

* loads every converted checkpoint whose hash is intact into its architecture
  (:func:`zoo.weights.conversion.check_loads`: every tensor, its shape, finite values);
* converts every manifest artifact whose downloads are all in the zoo's cache, intact, into a
  scratch file and loads that -- unless a converted checkpoint made from exactly those
  downloads just loaded (same bytes, same result). A first-use record is confirmed once its
  file converted and loaded, as :func:`zoo.weights.ensure_checkpoint` does.

Nothing is fetched: an artifact with a file not in the zoo's cache is not checked. Torch is
imported only when there is something to load.
"""

from __future__ import annotations

import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import is_anticipated, user_message
from zoo.hub import confirm_recorded
from zoo.weights.artifacts import ZOO_CACHE, fetch_file, plan_file
from zoo.weights.checkpoints import checkpoint_name, download_keys, first_use_keys
from zoo.weights.derived import CHECKPOINT, derived_files
from zoo.weights.manifest import Artifact, WeightsEntry, load_entries


@dataclass(frozen=True)
class UsableCheck:
    """Whether an artifact's cached downloads convert into a loadable checkpoint."""

    weights: str  # arch.tag of the manifest entry
    artifact: str  # the artifact's format
    keys: tuple[str, ...]  # cache keys of the downloads checked together
    ok: bool
    detail: str  # what was checked, or what failed and the fix


def check_checkpoint(path: Path) -> str | None:
    """None if the converted checkpoint loads into its architecture, else why not and the fix."""
    from zoo.weights.conversion import check_loads

    try:
        check_loads(path)
    except Exception as err:
        if not is_anticipated(err):
            raise
        return (
            f"does not load ({user_message(err)}); run `zoo cache rm {checkpoint_name(path)}` "
            "(the next use converts it again)"
        )
    return None


def check_downloads(intact: Collection[str], loaded: Collection[Path]) -> list[UsableCheck]:
    """Convert and load each manifest artifact whose downloads (cache keys) are all ``intact``,
    skipping those a checkpoint in ``loaded`` (just loaded fine) was made from."""
    covered = {
        item.sources for item in derived_files() if item.kind == CHECKPOINT and item.path in loaded
    }
    checks = []
    for entry in load_entries():
        for artifact in entry.artifacts:
            keys = tuple(download_keys(artifact))
            if keys in covered or not set(keys) <= set(intact) or not _all_cached(artifact):
                continue
            checks.append(_check_artifact(entry, artifact, keys))
    return checks


def _all_cached(artifact: Artifact) -> bool:
    """Every file comes from the zoo's cache: checking it fetches nothing."""
    return all(plan_file(f).origin == ZOO_CACHE for f in artifact.files)


def _check_artifact(entry: WeightsEntry, artifact: Artifact, keys: tuple[str, ...]) -> UsableCheck:
    from zoo.weights.conversion import build_checkpoint, check_loads

    try:
        paths = [fetch_file(f, quiet=True) for f in artifact.files]
        with tempfile.TemporaryDirectory(prefix="zoo-verify-") as scratch:
            out = Path(scratch) / f"{entry.tag}.safetensors"
            build_checkpoint(entry, artifact, paths, out)
            check_loads(out)
    except Exception as err:
        if not is_anticipated(err):
            raise
        names = " ".join(f.name for f in artifact.files)
        detail = (
            f"does not convert into {entry.name} ({user_message(err)}); run "
            f"`zoo cache rm --forget {names}` and download again"
        )
        return UsableCheck(entry.name, artifact.format, keys, False, detail)
    confirmed = [key for key in first_use_keys(artifact) if confirm_recorded(key)]
    detail = f"converts and loads as {entry.name}" + (
        " (first-use hash confirmed)" if confirmed else ""
    )
    return UsableCheck(entry.name, artifact.format, keys, True, detail)


__all__ = ["UsableCheck", "check_checkpoint", "check_downloads"]
