"""Turn the strings callers pass to ``fetch`` (and ``ZOO_MIRROR``) into concrete sources.

Accepted forms:

* ``http://...`` / ``https://...``
* ``hf://org/repo@revision/path/in/repo`` (revision defaults to ``main``; ``hf://repo@rev/f``
  for repos without an org; ``hf://datasets/org/repo/...`` for dataset repos). Resolved with
  ``huggingface_hub.hf_hub_url`` against ``HF_ENDPOINT`` *as set at call time*.
* ``file:///abs/path`` or a plain absolute path: verified and copied into the cache.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from .config import mirrors

HF_SCHEME = "hf://"
_HF_REPO_TYPES = {"datasets/": "dataset", "spaces/": "space", "models/": None}


@dataclass(frozen=True)
class Source:
    """One place a file can come from. ``label`` is what error messages show."""

    kind: str  # "http" or "local"
    location: str  # the URL for "http", a filesystem path for "local"
    label: str
    is_mirror: bool = False
    headers: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    # "local" only: the folder the file must really lie in (a ZOO_MIRROR folder, the folder of
    # the manifest naming it); a symlink leading elsewhere is refused, or a shared cache would
    # hand out a private file.
    root: str | None = None

    @property
    def is_remote(self) -> bool:
        return self.kind == "http"


def _is_http(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def _last_segment(path: str) -> str:
    return unquote(path.rstrip("/").rsplit("/", 1)[-1]) if path else ""


def default_filename(source: str | os.PathLike[str]) -> str:
    """Basename a source would be cached under when no ``filename`` is given (unvalidated:
    ``%2F`` is decoded on purpose so that the traversal guard sees it)."""
    text = os.fspath(source)
    if text.startswith(HF_SCHEME):
        return _last_segment(text[len(HF_SCHEME) :])
    if _is_http(text) or text.lower().startswith("file://"):
        return _last_segment(urlsplit(text).path)
    return os.path.basename(text)


def _hf_url(repo_id: str, path_in_repo: str, revision: str, repo_type: str | None) -> str:
    # huggingface_hub freezes HF_ENDPOINT into constants at import time; read it now instead.
    import huggingface_hub
    from huggingface_hub import constants

    endpoint = (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None
    kwargs: dict[str, object] = {"revision": revision, "repo_type": repo_type}
    supports_endpoint = "endpoint" in inspect.signature(huggingface_hub.hf_hub_url).parameters
    if supports_endpoint:
        kwargs["endpoint"] = endpoint
    url = huggingface_hub.hf_hub_url(repo_id, path_in_repo, **kwargs)  # type: ignore[arg-type]
    default = str(constants.ENDPOINT).rstrip("/")
    if endpoint and not url.startswith(endpoint) and url.startswith(default):
        url = endpoint + url[len(default) :]  # old versions without ``endpoint=``
    return url


def _hf_headers() -> dict[str, str]:
    """Bearer token for gated/private repos when the user is logged in; never required."""
    try:
        from huggingface_hub import get_token

        token = get_token()
    except Exception:  # an odd token file must not break public downloads
        token = None
    return {"authorization": f"Bearer {token}"} if token else {}


def parse_hf(text: str) -> tuple[str, str, str, str | None]:
    """``hf://[datasets/]org/repo[@rev]/path`` -> ``(repo_id, path, revision, repo_type)``."""
    rest = text[len(HF_SCHEME) :]
    repo_type = None
    for prefix, kind in _HF_REPO_TYPES.items():
        if rest.startswith(prefix):
            rest, repo_type = rest[len(prefix) :], kind
            break
    parts = rest.split("/")
    n_repo = 1 if "@" in parts[0] else 2
    repo, path_parts = "/".join(parts[:n_repo]), parts[n_repo:]
    repo_id, _, revision = repo.partition("@")
    revision = unquote(revision) or "main"
    if (
        not repo_id
        or not path_parts
        or any(p in ("", ".", "..") for p in path_parts)
        or any(p in ("", ".", "..") for p in repo_id.split("/"))
    ):
        raise ValueError(f"bad hf:// source {text!r}: expected hf://org/repo@revision/path")
    return repo_id, "/".join(path_parts), revision, repo_type


def parse_source(source: str | os.PathLike[str]) -> Source:
    text = os.fspath(source)
    if not isinstance(text, str) or not text:
        raise ValueError(f"empty or non-text source: {source!r}")
    if not isinstance(source, str):
        return Source("local", os.path.abspath(text), text)  # a Path object: a local file
    if text.startswith(HF_SCHEME):
        repo_id, path_in_repo, revision, repo_type = parse_hf(text)
        url = _hf_url(repo_id, path_in_repo, revision, repo_type)
        return Source("http", url, text, headers=_hf_headers())
    if _is_http(text):
        return Source("http", text, text)
    if text.lower().startswith("file://"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file:// source with a remote host is not supported: {text!r}")
        return Source("local", unquote(parts.path), text)
    if os.path.isabs(text):
        return Source("local", text, text)
    raise ValueError(
        f"unsupported source {text!r}: use http(s)://, hf://org/repo@rev/path, file:// "
        "or an absolute path"
    )


def mirror_sources(filename: str) -> list[Source]:
    """``{mirror}/{filename}`` for every ``ZOO_MIRROR`` entry, in order."""
    found: list[Source] = []
    for mirror in mirrors():
        if _is_http(mirror):
            url = f"{mirror.rstrip('/')}/{quote(filename)}"
            found.append(Source("http", url, url, is_mirror=True))
            continue
        if mirror.lower().startswith("file://"):
            mirror = unquote(urlsplit(mirror).path)
        folder = Path(mirror).expanduser()
        path = str(folder / filename)
        found.append(Source("local", path, path, is_mirror=True, root=str(folder)))
    return found
