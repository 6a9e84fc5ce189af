"""The weights manifest as typed, validated records.

One :class:`WeightsEntry` per (arch, tag): the facts users see (preprocessing, labels, metrics,
license, provenance) and an ordered list of :class:`Artifact` alternatives, each one or more
:class:`ArtifactFile` with sources and the hash its publisher gives. The packaged
``weights_manifest.json`` is merged with every file in ``$ZOO_MANIFESTS`` (os.pathsep-separated)
and ``$ZOO_HOME/manifest.json``; an (arch, tag) defined twice is an error naming both files.

Format versions (every version stays readable):

* 1: every entry states ``preprocess``; keys it leaves out take :class:`Preprocess`'s defaults.
* 2: ``preprocess`` may be left out, and the entry then uses its arch's (one fact, one place);
  when given it is complete, so its ``resize`` is the publisher's own number (GluonCV rounds
  crop / crop_pct up, timm down) and never one re-derived with somebody else's rounding.
  Metrics may say the image size, crop_pct and interpolation they were measured with.
* 3: weights a zoo run produced (``zoo weights add``): ``labels`` may be the run's own list of
  class ids (e.g. WordNet ids, which ``eval`` matches to folders), ``label_names`` their display
  names, and ``training`` how they were made (recipe, data fingerprint, zoo version, run).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from zoo.formats import SOURCE_FORMATS
from zoo.hub import validate_filename, zoo_home
from zoo.preprocess import INTERPOLATIONS, Preprocess

FORMAT_VERSION = 2  # what the packaged manifest is written in
FORMAT_VERSIONS = (1, 2, 3)  # what is read
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
    # How it was measured, where the publisher says (may differ from the entry's preprocess).
    img_size: int | None = None
    crop_pct: float | None = None
    interpolation: str = ""


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
    labels: str | tuple[str, ...]  # a label-set name, or one class id per class (format 3)
    own_preprocess: Preprocess | None  # None: the arch's (see `preprocess`)
    license: str
    provenance: str
    artifacts: tuple[Artifact, ...]
    metrics: tuple[Metric, ...] = ()
    origin: str = ""  # the manifest file it came from
    label_names: tuple[str, ...] | None = None  # display names of ``labels`` ids (format 3)
    training: dict[str, Any] | None = None  # recipe, data fingerprint, zoo version (format 3)

    @property
    def name(self) -> str:
        return f"{self.arch}.{self.tag}"

    @property
    def preprocess(self) -> Preprocess:
        """The eval preprocessing of these weights: the entry's own, else its arch's.

        Resolved on use, not at parse time, so that reading a manifest never imports torch.
        """
        if self.own_preprocess is not None:
            return self.own_preprocess
        from zoo.registry import get_spec

        return get_spec(self.arch).preprocess

    @property
    def non_commercial(self) -> bool:
        """Creative Commons NonCommercial licences (cc-by-nc-4.0, cc-by-nc-sa-4.0, ...)."""
        return self.license.lower().startswith("cc-by-nc")

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
    local = zoo_home() / "manifest.json" if paths is None else None
    for path in paths if paths is not None else manifest_files():
        try:
            parsed = parse_manifest(path)
        except ManifestError as err:
            if path != local:
                raise
            # The file `zoo weights add` writes: a mistake there must not take the packaged
            # catalogue down with it.
            logging.getLogger("zoo").warning("ignoring %s: %s", path, err)
            continue
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
    except RecursionError:
        raise ManifestError(f"{path}: JSON nested too deeply to be a manifest") from None
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not UTF-8 text ({err})") from None
    _require(isinstance(data, dict), path, "top level must be an object")
    version = data.get("format_version")
    _require(
        version in FORMAT_VERSIONS,
        path,
        f"format_version {version!r} is not one this zoo reads ({FORMAT_VERSIONS}); "
        "a newer zoo may read it",
    )
    _require(isinstance(data.get("weights"), list), path, "'weights' must be a list")
    _require(set(data) <= {"format_version", "weights", "about"}, path, "unknown top-level keys")
    return [
        _entry(raw, f"{path}: weights[{i}]", str(path), version)
        for i, raw in enumerate(data["weights"])
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


# An entry's keys. A later schema addition goes here, with its parsing in _entry (and a
# FORMAT_VERSIONS bump when it changes what an existing key means).
_ENTRY_REQUIRED = {"arch", "tag", "num_classes", "labels", "license", "provenance", "artifacts"}
_ENTRY_OPTIONAL = {"default", "label_offset", "metrics", "preprocess"}
_ENTRY_OPTIONAL_V3 = {"label_names", "training"}  # weights a zoo run produced
_PREPROCESS_KEYS = {f.name for f in dataclasses.fields(Preprocess)}
_METRIC_REQUIRED = {"top1", "dataset", "source"}
_METRIC_OPTIONAL = {"top5", "note", "img_size", "crop_pct", "interpolation"}


def _entry(raw: Any, where: str, origin: str, version: int) -> WeightsEntry:
    optional = _ENTRY_OPTIONAL | (_ENTRY_OPTIONAL_V3 if version >= 3 else set())
    raw = _fields(raw, where, _ENTRY_REQUIRED, optional)
    where = f"{where} ({raw['arch']}.{raw['tag']})"
    # Parsing stays torch-free (the registry imports every model family): here only the form of
    # the name; zoo.weights checks it is a registered canonical name before it converts or lists.
    _require(
        isinstance(raw["arch"], str) and bool(_ARCH.fullmatch(raw["arch"])),
        where,
        "arch must be a canonical model name (lowercase identifier)",
    )
    _require(isinstance(raw["tag"], str) and bool(_TAG.fullmatch(raw["tag"])), where,
             "bad tag: lowercase letters and digits joined by single '_'")  # fmt: skip
    # Strict types: "default": "false" is not True, "num_classes": "1000" not a number.
    _require(type(raw.get("default", False)) is bool, where, "default: true or false")
    _require(_whole(raw["num_classes"]) and raw["num_classes"] > 0, where,
             "num_classes: a positive whole number")  # fmt: skip
    for key in ("license", "provenance"):
        _require(isinstance(raw[key], str) and bool(raw[key]), where, f"{key}: a non-empty string")
    offset = raw.get("label_offset", 0)
    _require(_whole(offset) and 0 <= offset < raw["num_classes"], where,
             "label_offset: a whole number in [0, num_classes)")  # fmt: skip
    labels, names = _labels(raw, where, version)
    _require(isinstance(raw["artifacts"], list) and raw["artifacts"], where, "needs artifacts")
    return WeightsEntry(
        arch=raw["arch"],
        tag=raw["tag"],
        default=raw.get("default", False),
        num_classes=raw["num_classes"],
        label_offset=offset,
        labels=labels,
        own_preprocess=_preprocess(raw, where, version),
        license=str(raw["license"]),
        provenance=str(raw["provenance"]),
        artifacts=tuple(
            _artifact(a, f"{where} artifacts[{i}]") for i, a in enumerate(raw["artifacts"])
        ),
        metrics=tuple(
            _metric(m, f"{where} metrics[{i}]") for i, m in enumerate(raw.get("metrics", []))
        ),
        origin=origin,
        label_names=names,
        training=_training(raw.get("training"), where),
    )


def _whole(value: Any) -> bool:
    """An int that is not a bool (JSON ``true`` would pass ``isinstance(v, int)``)."""
    return type(value) is int


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _labels(raw: dict[str, Any], where: str, version: int) -> tuple[Any, tuple[str, ...] | None]:
    labels, names = raw["labels"], raw.get("label_names")
    if isinstance(labels, str):
        _require(labels in LABEL_SETS, where, f"labels must be one of {LABEL_SETS} or a list")
        _require(names is None, where, "label_names go with a list of labels")
        return labels, None
    _require(version >= 3, where, f"labels must be one of {LABEL_SETS} (a list needs format 3)")
    _require(_strings(labels) and len(set(labels)) == len(labels), where,
             "labels must be a list of distinct class ids")  # fmt: skip
    classes = raw["num_classes"] - raw.get("label_offset", 0)
    _require(len(labels) == classes, where, f"{len(labels)} labels for {classes} classes")
    if names is not None:
        _require(_strings(names) and len(names) == len(labels), where,
                 "label_names must be one name per label")  # fmt: skip
    return tuple(labels), None if names is None else tuple(names)


def _training(raw: Any, where: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    raw = _fields(raw, f"{where} training", {"recipe", "zoo_version"},
                  {"data", "data_fingerprint", "run", "wall_seconds", "epochs"})  # fmt: skip
    _require(isinstance(raw["recipe"], dict), where, "training.recipe: the resolved recipe")
    return raw


def _preprocess(raw: dict[str, Any], where: str, version: int) -> Preprocess | None:
    if "preprocess" not in raw:
        _require(version >= 2, where, "format_version 1 needs 'preprocess' (2 may leave it out)")
        return None
    if version >= 2:  # complete, so that the resize is the publisher's own (see the docstring)
        _fields(raw["preprocess"], f"{where} preprocess", _PREPROCESS_KEYS, set())
    try:
        return Preprocess.from_dict(raw["preprocess"])
    except (TypeError, ValueError) as err:
        raise ManifestError(f"{where}: preprocess: {err}") from None


def _metric(raw: Any, where: str) -> Metric:
    raw = _fields(raw, where, _METRIC_REQUIRED, _METRIC_OPTIONAL)
    for key in ("dataset", "source", "note"):
        _require(isinstance(raw.get(key, ""), str), where, f"{key}: a string")
    _require(_number(raw["top1"]) and 0 < raw["top1"] <= 100, where, "top1 is a percentage")
    top5 = raw.get("top5")
    _require(top5 is None or (_number(top5) and 0 < top5 <= 100), where, "top5 is a percentage")
    size, crop_pct = raw.get("img_size"), raw.get("crop_pct")
    _require(size is None or (type(size) is int and size > 0), where, "img_size: pixels")
    _require(
        crop_pct is None or (_number(crop_pct) and 0 < crop_pct <= 1), where, "crop_pct: (0, 1]"
    )
    interpolation = raw.get("interpolation", "")
    _require(
        interpolation in ("", *INTERPOLATIONS), where, f"interpolation: one of {INTERPOLATIONS}"
    )
    return Metric(
        top1=float(raw["top1"]),
        top5=None if top5 is None else float(top5),
        dataset=raw["dataset"],
        source=raw["source"],
        note=raw.get("note", ""),
        img_size=size,
        crop_pct=None if crop_pct is None else float(crop_pct),
        interpolation=interpolation,
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
    except (ValueError, TypeError) as err:
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
    sha256, sha1, size = raw.get("sha256"), raw.get("sha1"), raw.get("size")
    if sha256 is not None:
        _require(isinstance(sha256, str) and bool(_HEX.fullmatch(sha256))
                 and 8 <= len(sha256) <= 64, where, "sha256: >= 8 hex digits")  # fmt: skip
    if sha1 is not None:
        _require(isinstance(sha1, str) and bool(_HEX.fullmatch(sha1)) and len(sha1) == 40,
                 where, "sha1: 40 hex digits")  # fmt: skip
    _require(size is None or (_whole(size) and size >= 0), where,
             "size: a non-negative whole number of bytes")  # fmt: skip
    for key in ("role", "unverified"):
        _require(isinstance(raw.get(key, ""), str), where, f"{key}: a string")
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
