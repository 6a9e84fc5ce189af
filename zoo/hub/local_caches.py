"""Find files that other libraries already downloaded, so the zoo need not download them again.

Three caches are searched, read-only (nothing there is ever modified, moved or deleted):

=====================  =================================================================
Hugging Face           ``hf://`` sources, through ``huggingface_hub.try_to_load_from_cache``
                       in ``$HF_HUB_CACHE`` (else ``$HUGGINGFACE_HUB_CACHE``, else
                       ``$HF_HOME/hub``, default ``~/.cache/huggingface/hub``). A snapshot
                       file is a symlink to ``blobs/<sha256>`` for LFS files: that name is
                       the hash the copy must have.
torch.hub              ``http(s)`` sources, by the URL's file name, in
                       ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch``): where
                       torchvision and timm's URL weights land. ``name-<hex>.pth`` embeds a
                       sha256 prefix the copy must have (torch.hub's own convention).
GluonCV                archive members, by name, in ``$MXNET_HOME/models`` (default
                       ``~/.mxnet/models``): GluonCV keeps the extracted ``<name>.params``.
=====================  =================================================================

``ZOO_LOCAL_CACHES=0`` turns the search off. The paths are read from the environment at call
time (huggingface_hub freezes ``HF_HUB_CACHE`` at import; we do not), and torch is never
imported: ``TORCH_HOME`` is resolved the way ``torch.hub`` resolves it.

A candidate is only a hint: :mod:`zoo.hub.fetch` copies it, then checks the copy against the
manifest's hash (or the trust-on-first-use record) *and* the hash the foreign cache vouches
for; a candidate with nothing to check against is not used.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .cache import validate_filename
from .errors import HashMismatchError
from .integrity import FileDigest, verify_file
from .sources import HF_SCHEME, parse_hf

log = logging.getLogger(__name__)

HUGGING_FACE = "Hugging Face cache"
TORCH_HUB = "torch.hub cache"
GLUONCV = "GluonCV cache"

_OFF = frozenset({"0", "false", "no", "off"})
_SHA256 = re.compile(r"[0-9a-f]{64}")
# torch.hub.download_url_to_file's check_hash convention: "-<hex>." in the file name is a
# sha256 prefix. Fewer than 8 digits would be guessable, so such names vouch for nothing.
_TORCH_HASH = re.compile(r"-([0-9a-f]{8,64})\.")


@dataclass(frozen=True)
class LocalFile:
    """A copy of a wanted file in another library's cache, not yet verified.

    ``sha256`` (full or a prefix) is what that cache's own layout vouches for: the blob name
    in the Hugging Face cache, the ``-<hex>.`` part of a torch.hub file name; None if nothing.
    """

    path: Path
    origin: str  # HUGGING_FACE, TORCH_HUB or GLUONCV
    sha256: str | None = None

    @property
    def label(self) -> str:
        """How error messages and ``zoo download --dry-run`` name it."""
        return f"{self.origin} {self.path}"

    def check(self, digest: FileDigest) -> None:
        """Raise :class:`HashMismatchError` naming this file if ``digest`` (of its copy) is not
        what its cache vouches for."""
        if self.sha256 is not None and not digest.sha256.startswith(self.sha256):
            raise HashMismatchError(self.label, "sha256", self.sha256, digest.sha256)

    def refusal(self, err: HashMismatchError) -> str:
        """What to tell the user when its copy failed verification."""
        return (
            f"refused {self.label}: {err.algorithm} {err.actual}, expected {err.expected} "
            "(tampered or corrupt; left as it is, not used)"
        )


def enabled() -> bool:
    """False when ``ZOO_LOCAL_CACHES`` is ``0/false/no/off``."""
    return os.environ.get("ZOO_LOCAL_CACHES", "").strip().lower() not in _OFF


def _expand(value: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(value)))


def _xdg_cache() -> str:
    return os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")


def hf_hub_cache() -> Path:
    """huggingface_hub's cache folder, with its precedence, read now."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return _expand(explicit)
    home = os.environ.get("HF_HOME") or os.path.join(_xdg_cache(), "huggingface")
    return _expand(home) / "hub"


def torch_hub_checkpoints() -> Path:
    """``torch.hub.get_dir() / "checkpoints"`` without importing torch."""
    home = os.environ.get("TORCH_HOME") or os.path.join(_xdg_cache(), "torch")
    return _expand(home) / "hub" / "checkpoints"


def mxnet_models() -> Path:
    """Where GluonCV's ``model_store`` keeps extracted ``.params`` files."""
    return _expand(os.environ.get("MXNET_HOME") or os.path.join("~", ".mxnet")) / "models"


def cache_locations() -> dict[str, Path]:
    """Every folder searched, by origin (for ``zoo env``)."""
    return {
        HUGGING_FACE: hf_hub_cache(),
        TORCH_HUB: torch_hub_checkpoints(),
        GLUONCV: mxnet_models(),
    }


def find_local(sources: Sequence[str], *, member: str | None = None) -> list[LocalFile]:
    """Copies of a file (or, with ``member``, of that archive member) in other libraries'
    caches, best first. Cheap: a few ``stat`` calls, no hashing."""
    if not enabled():
        return []
    if member is not None:
        found = _in_folder(mxnet_models(), member, GLUONCV, vouched=None)
        return [found] if found else []
    candidates: list[LocalFile] = []
    for source in sources:
        if source.startswith(HF_SCHEME):
            found = _in_hf_cache(source)
        elif source.lower().startswith(("http://", "https://")):
            name = os.path.basename(urlsplit(source).path)  # what torch.hub names it
            match = _TORCH_HASH.search(name)
            vouched = match[1] if match else None
            found = _in_folder(torch_hub_checkpoints(), name, TORCH_HUB, vouched)
        else:
            found = None
        if found is not None and found not in candidates:
            candidates.append(found)
    return candidates


def _in_folder(folder: Path, name: str, origin: str, vouched: str | None) -> LocalFile | None:
    try:
        validate_filename(name)  # names come from manifests: never a path out of the folder
    except ValueError:
        return None
    path = folder / name
    return LocalFile(path, origin, vouched) if path.is_file() else None


def _in_hf_cache(source: str) -> LocalFile | None:
    try:
        repo_id, path_in_repo, revision, repo_type = parse_hf(source)
    except ValueError:
        return None
    from huggingface_hub import try_to_load_from_cache  # ~0.4 s, only when needed

    try:
        found = try_to_load_from_cache(
            repo_id, path_in_repo, cache_dir=hf_hub_cache(), revision=revision,
            repo_type=repo_type,
        )  # fmt: skip
    except (ValueError, OSError) as exc:  # odd repo names, unreadable refs
        log.info("Hugging Face cache lookup of %s failed: %s", source, exc)
        return None
    if not isinstance(found, str):  # None, or the "known not to exist" marker
        return None
    snapshot = Path(found)
    if not snapshot.is_symlink():  # a copy (no symlinks on this system): nothing vouched
        return LocalFile(snapshot, HUGGING_FACE)
    # <repo>/snapshots/<revision>/<path_in_repo> -> <repo>/blobs/<sha256 for LFS files>
    blobs = snapshot.parents[path_in_repo.count("/") + 2] / "blobs"
    blob = snapshot.resolve()
    if blob.parent != blobs.resolve():
        log.warning("ignoring %s: its link leaves the Hugging Face cache (%s)", snapshot, blob)
        return None
    return LocalFile(blob, HUGGING_FACE, blob.name if _SHA256.fullmatch(blob.name) else None)


def is_verifiable(candidate: LocalFile, sha256: str | None, sha1: str | None) -> bool:
    """Whether using ``candidate`` can be checked against anything at all."""
    return bool(candidate.sha256 or sha256 or sha1)


def copy_verified(
    candidate: LocalFile,
    part: Path,
    *,
    sha256: str | None,
    sha1: str | None,
    size: int | None,
) -> FileDigest:
    """Copy ``candidate`` to the scratch file ``part``, then check the copy (what we hash is
    exactly what we keep) against the given hashes and what its cache vouches for. On a
    mismatch ``part`` is removed and :class:`HashMismatchError` names the candidate; renaming
    ``part`` to its final name is the caller's job."""
    if not is_verifiable(candidate, sha256, sha1):
        raise ValueError(f"{candidate.label}: no hash to verify it against")
    part.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(candidate.path, part)
        with open(part, "rb+") as f:
            os.fsync(f.fileno())  # durable before the caller's rename
        digest = verify_file(part, sha256, sha1, size, source=candidate.label)
        candidate.check(digest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return digest


__all__ = [
    "GLUONCV",
    "HUGGING_FACE",
    "TORCH_HUB",
    "LocalFile",
    "cache_locations",
    "copy_verified",
    "enabled",
    "find_local",
    "hf_hub_cache",
    "is_verifiable",
    "mxnet_models",
    "torch_hub_checkpoints",
]
