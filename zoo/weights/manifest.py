"""The weights manifest as typed, validated records.

One :class:`WeightsEntry` per (arch, tag): the facts users see (preprocessing, labels, metrics,
license, provenance) and an ordered list of :class:`Artifact` alternatives, each one or more
:class:`ArtifactFile` with sources and the hash its publisher gives. The packaged
``weights_manifest.json`` is merged with every file in ``$ZOO_MANIFESTS`` (os.pathsep-separated)
and ``$ZOO_HOME/manifest.json``; an (arch, tag) defined twice is an error naming both files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from zoo.formats import SOURCE_FORMATS
from zoo.hub import validate_filename, zoo_home
from zoo.preprocess import Preprocess

FORMAT_VERSION = 1
LABEL_SETS = ("imagenet-1k",)
_ARCH = re.compile(r"^[a-z][a-z0-9_]*$")  # the registry's canonical-name form
_TAG = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)*$")
_HEX = re.compile(r"^[0-9a-f]+$")


class ManifestError(ValueError):
    """A manifest that does not follow the schema; the message names file, entry and field."""


@dataclass(frozen=True)
class Metric:
    top1: float
    top5: float | None
    dataset: str  # e.g. "imagenet-1k-val"
    source: str  # who measured it: "gluoncv", "timm", "torchvision", "zoo", ...
    note: str = ""


@dataclass(frozen=True)
class ArtifactFile:
    name: str  # file name in the cache; never a path
    sources: tuple[str, ...]  # https URLs, hf://org/repo@rev/path, local paths
    sha256: str | None = None  # full digest or a prefix of >= 8 hex digits
    sha1: str | None = None
    size: int | None = None
    member: str | None = None  # the hash is of this archive member, not of the archive
    role: str = ""  # for multi-file artifacts, e.g. "backbone" / "head"
    unverified: str = ""  # why no hash is given (then trust on first use applies)


@dataclass(frozen=True)
class Artifact:
    format: str  # converter: one of SOURCE_FORMATS
    files: tuple[ArtifactFile, ...]
    note: str = ""


@dataclass(frozen=True)
class WeightsEntry:
    arch: str
    tag: str
    default: bool
    num_classes: int
    label_offset: int
    labels: str
    preprocess: Preprocess
    license: str
    provenance: str
    artifacts: tuple[Artifact, ...]
    metrics: tuple[Metric, ...] = ()
    origin: str = ""  # the manifest file it came from

    @property
    def name(self) -> str:
        return f"{self.arch}.{self.tag}"

    def published_top1(self) -> float | None:
        return next((m.top1 for m in self.metrics if m.dataset == "imagenet-1k-val"), None)


def packaged_manifest() -> Path:
    """The manifest inside an installed wheel, else the one at a source checkout's root."""
    packaged = resources.files("zoo").joinpath("weights_manifest.json")
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "weights_manifest.json"


def manifest_files() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("ZOO_MANIFESTS", "").split(os.pathsep) if p]
    local = zoo_home() / "manifest.json"
    return [packaged_manifest(), *extra, *([local] if local.is_file() else [])]


def load_entries(paths: list[Path] | None = None) -> list[WeightsEntry]:
    """Every entry of every manifest, validated. An (arch, tag) defined twice raises; a later
    manifest's default tag replaces an earlier one's (an organisation's choice wins)."""
    entries: dict[tuple[str, str], WeightsEntry] = {}
    for path in paths if paths is not None else manifest_files():
        parsed = parse_manifest(path)
        _check_defaults(parsed, path)
        new_defaults = {e.arch for e in parsed if e.default}
        for key, entry in entries.items():
            if entry.default and entry.arch in new_defaults:
                entries[key] = dataclasses.replace(entry, default=False)
        for entry in parsed:
            key = (entry.arch, entry.tag)
            if key in entries:
                raise ManifestError(
                    f"{entry.name} is defined twice: in {entries[key].origin} and in {path}"
                )
            entries[key] = entry
    missing = {e.arch for e in entries.values()} - {e.arch for e in entries.values() if e.default}
    if missing:
        raise ManifestError(f"no default tag for {', '.join(sorted(missing))}: mark one default")
    return list(entries.values())


def _check_defaults(entries: list[WeightsEntry], path: Path) -> None:
    for arch in {e.arch for e in entries}:
        defaults = [e.tag for e in entries if e.arch == arch and e.default]
        if len(defaults) > 1:
            raise ManifestError(f"{path}: {arch} has several default tags: {', '.join(defaults)}")


def parse_manifest(path: Path) -> list[WeightsEntry]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path} (check ZOO_MANIFESTS)") from None
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: not valid JSON ({err})") from None
    _require(isinstance(data, dict), path, "top level must be an object")
    _require(data.get("format_version") == FORMAT_VERSION, path, "format_version must be 1")
    _require(isinstance(data.get("weights"), list), path, "'weights' must be a list")
    _require(set(data) <= {"format_version", "weights", "about"}, path, "unknown top-level keys")
    return [
        _entry(raw, f"{path}: weights[{i}]", str(path)) for i, raw in enumerate(data["weights"])
    ]


def _require(ok: bool, where: Any, message: str) -> None:
    if not ok:
        raise ManifestError(f"{where}: {message}")


def _fields(raw: Any, where: str, required: set[str], optional: set[str]) -> dict[str, Any]:
    _require(isinstance(raw, dict), where, "must be an object")
    missing, unknown = required - set(raw), set(raw) - required - optional
    _require(not missing, where, f"missing {sorted(missing)}")
    _require(
        not unknown, where, f"unknown keys {sorted(unknown)}; known: {sorted(required | optional)}"
    )
    return raw


def _entry(raw: Any, where: str, origin: str) -> WeightsEntry:
    raw = _fields(
        raw,
        where,
        {
            "arch",
            "tag",
            "num_classes",
            "labels",
            "preprocess",
            "license",
            "provenance",
            "artifacts",
        },
        {"default", "label_offset", "metrics"},
    )
    where = f"{where} ({raw['arch']}.{raw['tag']})"
    # Parsing stays torch-free (the registry imports every model family): here only the form of
    # the name; zoo.weights checks it is a registered canonical name before it converts or lists.
    _require(
        isinstance(raw["arch"], str) and bool(_ARCH.match(raw["arch"])),
        where,
        "arch must be a canonical model name (lowercase identifier)",
    )
    _require(isinstance(raw["tag"], str) and bool(_TAG.match(raw["tag"])), where, "bad tag")
    _require(raw["labels"] in LABEL_SETS, where, f"labels must be one of {LABEL_SETS}")
    offset = raw.get("label_offset", 0)
    _require(isinstance(offset, int) and 0 <= offset < raw["num_classes"], where, "label_offset")
    _require(isinstance(raw["artifacts"], list) and raw["artifacts"], where, "needs artifacts")
    try:
        preprocess = Preprocess.from_dict(raw["preprocess"])
    except (TypeError, ValueError) as err:
        raise ManifestError(f"{where}: preprocess: {err}") from None
    return WeightsEntry(
        arch=raw["arch"],
        tag=raw["tag"],
        default=bool(raw.get("default", False)),
        num_classes=int(raw["num_classes"]),
        label_offset=offset,
        labels=raw["labels"],
        preprocess=preprocess,
        license=str(raw["license"]),
        provenance=str(raw["provenance"]),
        artifacts=tuple(
            _artifact(a, f"{where} artifacts[{i}]") for i, a in enumerate(raw["artifacts"])
        ),
        metrics=tuple(
            _metric(m, f"{where} metrics[{i}]") for i, m in enumerate(raw.get("metrics", []))
        ),
        origin=origin,
    )


def _metric(raw: Any, where: str) -> Metric:
    raw = _fields(raw, where, {"top1", "dataset", "source"}, {"top5", "note"})
    _require(0 < raw["top1"] <= 100, where, "top1 is a percentage")
    return Metric(
        float(raw["top1"]), raw.get("top5"), raw["dataset"], raw["source"], raw.get("note", "")
    )


def _artifact(raw: Any, where: str) -> Artifact:
    raw = _fields(raw, where, {"format", "files"}, {"note"})
    _require(raw["format"] in SOURCE_FORMATS, where, f"format must be one of {SOURCE_FORMATS}")
    _require(isinstance(raw["files"], list) and raw["files"], where, "needs files")
    files = tuple(_file(f, f"{where} files[{i}]") for i, f in enumerate(raw["files"]))
    return Artifact(raw["format"], files, raw.get("note", ""))


def _file(raw: Any, where: str) -> ArtifactFile:
    raw = _fields(
        raw, where, {"name", "sources"}, {"sha256", "sha1", "size", "member", "role", "unverified"}
    )
    try:  # names come from manifests that may be hostile: no paths, no traversal
        validate_filename(raw["name"])
        if raw.get("member") is not None:
            validate_filename(raw["member"])
    except ValueError as err:
        raise ManifestError(f"{where}: {err}") from None
    sources = raw["sources"]
    _require(isinstance(sources, list) and sources, where, "needs at least one source")
    for source in sources:
        _require(
            isinstance(source, str)
            and source.startswith(("https://", "http://", "hf://", "/", "file://")),
            where,
            f"source {source!r} must be an http(s) URL, hf://org/repo@rev/path or an absolute path",
        )
    sha256, sha1 = raw.get("sha256"), raw.get("sha1")
    if sha256 is not None:
        _require(
            bool(_HEX.match(sha256)) and 8 <= len(sha256) <= 64, where, "sha256: >= 8 hex digits"
        )
    if sha1 is not None:
        _require(bool(_HEX.match(sha1)) and len(sha1) == 40, where, "sha1: 40 hex digits")
    _require(
        bool(sha256 or sha1 or raw.get("unverified")),
        where,
        "give sha256/sha1, or say in 'unverified' why no hash is known (trust on first use)",
    )
    return ArtifactFile(
        name=raw["name"],
        sources=tuple(sources),
        sha256=sha256,
        sha1=sha1,
        size=raw.get("size"),
        member=raw.get("member"),
        role=raw.get("role", ""),
        unverified=raw.get("unverified", ""),
    )


__all__ = [
    "Artifact",
    "ArtifactFile",
    "ManifestError",
    "Metric",
    "WeightsEntry",
    "load_entries",
    "manifest_files",
    "parse_manifest",
]
