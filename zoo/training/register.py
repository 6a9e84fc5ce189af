"""``zoo weights add RUN_DIR --tag TAG``: a finished run becomes hub weights.

The run's ``final.safetensors`` is copied beside the manifest into ``registered/`` (so deleting
the run directory does not break the tag), hashed, and recorded as a format-3 entry: the run's
own class ids and names, its measured val metrics, the resolved recipe, the data fingerprint and
the zoo version. The manifest is ``$ZOO_HOME/manifest.json`` unless another path is given; it is
validated before it replaces the old one, atomically.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.hub import zoo_home
from zoo.hub.atomic import atomic_path
from zoo.training import rundir
from zoo.training.recipe import load_resolved
from zoo.weights.manifest import FORMAT_VERSIONS, ManifestError, load_entries, parse_manifest

MANIFEST_VERSION = 3


@dataclass(frozen=True)
class Added:
    arch: str
    tag: str
    default: bool
    manifest: Path
    file: Path
    sha256: str
    top1: float


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"format_version": MANIFEST_VERSION, "weights": []}
    parse_manifest(path)  # refuse to build on a broken file: the error names it
    data = json.loads(path.read_text(encoding="utf-8"))
    data["format_version"] = max(MANIFEST_VERSION, data["format_version"])
    return data


def add_weights(
    run_dir: str | Path,
    tag: str,
    *,
    default: bool = False,
    force: bool = False,
    manifest: str | Path | None = None,
    license: str = "unspecified",
) -> Added:
    from zoo.checkpoint import read_meta

    run = Path(run_dir)
    final, metrics_file = run / rundir.FINAL_FILE, run / rundir.METRICS_FILE
    if not final.is_file() or not metrics_file.is_file():
        raise rundir.RunDirError(
            f"{run}: no finished run here (needs {rundir.FINAL_FILE} and {rundir.METRICS_FILE}); "
            "finish it with `zoo train --resume` first"
        )
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    meta = read_meta(final)
    recipe = load_resolved(run / rundir.RECIPE_FILE)
    args = json.loads((run / rundir.RUN_FILE).read_text(encoding="utf-8"))
    path = Path(manifest) if manifest else zoo_home() / "manifest.json"
    data = _read_manifest(path)
    arch = meta.arch
    mine = [w for w in data["weights"] if (w["arch"], w["tag"]) == (arch, tag)]
    if mine and not force:
        raise ValueError(f"{arch}.{tag} already exists in {path}; use --force to replace it")
    others = [e for e in load_entries() if e.arch == arch and e.origin != str(path)]
    if any(e.tag == tag for e in others):
        raise ValueError(f"{arch}.{tag} is already defined in {others[0].origin}; choose a new tag")
    siblings = [w for w in data["weights"] if w["arch"] == arch and w["tag"] != tag]
    default = default or not (others or siblings)  # the arch's first weights are its default

    sha = _sha256(final)
    # beside the manifest, apart from $ZOO_HOME/weights (the cache of converted downloads)
    store = path.parent / "registered" / f"{arch}.{tag}-{sha[:8]}.safetensors"
    with atomic_path(store) as tmp:
        shutil.copyfile(final, tmp)
    labels = list(meta.labels) if isinstance(meta.labels, tuple) else meta.labels
    num_classes = meta.config.get("num_classes")
    if num_classes is None:
        raise ValueError(f"{final}: the file does not record its number of classes")
    entry: dict[str, Any] = {
        "arch": arch,
        "tag": tag,
        "default": default,
        "num_classes": num_classes,
        "label_offset": meta.label_offset,
        "labels": labels,
        "license": license,
        "provenance": f"zoo train --recipe {recipe.name} --model {arch} on {args['data']}",
        "preprocess": json.loads(meta.preprocess.to_json()) if meta.preprocess else None,
        "metrics": [
            {
                "top1": metrics["top1"],
                "top5": metrics["top5"],
                "source": "zoo",
                "dataset": f"{Path(args['data']).name}-val",
                "img_size": metrics.get("eval_img_size", metrics["img_size"]),
            }
        ],
        "artifacts": [
            {
                "format": "zoo",
                "files": [
                    {
                        "name": store.name,
                        "sources": [str(store.resolve())],
                        "sha256": sha,
                        "size": store.stat().st_size,
                    }
                ],
            }
        ],
        "training": {
            "recipe": recipe.to_dict(),
            "zoo_version": metrics.get("zoo_version", ""),
            "data": args["data"],
            "data_fingerprint": metrics.get("data_fingerprint", ""),
            "run": str(run.resolve()),
            "epochs": metrics["epochs"],
            "wall_seconds": metrics["wall_seconds"],
        },
    }
    if entry["preprocess"] is None:
        del entry["preprocess"]
    if meta.label_names is not None and list(meta.label_names) != labels:
        entry["label_names"] = list(meta.label_names)
    if default:
        for w in siblings:
            w["default"] = False
    data["weights"] = [w for w in data["weights"] if w not in mine] + [entry]
    assert data["format_version"] in FORMAT_VERSIONS
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        try:
            parse_manifest(tmp)
        except ManifestError as err:  # never leave a manifest zoo cannot read
            raise ValueError(f"the new entry does not validate: {err}") from None
    return Added(arch, tag, default, path, store, sha, metrics["top1"])
