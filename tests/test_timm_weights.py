"""timm's own weights in the manifest, and the manifest's preprocessing rules (format 2).

Independent references: ../shared/weights/timm_extra_weights.json (facts read from timm's source
and results table), the installed timm's pretrained cfgs, and timm's models with random weights.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import SHARED, randomize
from safetensors.torch import save_file
from test_resnet import TIMM_PAIRS

import zoo
from zoo.convert import convert
from zoo.models.mobilenet import TF_CROP
from zoo.preprocess import Preprocess
from zoo.registry import get_spec
from zoo.weights.manifest import ManifestError, load_entries, packaged_manifest, parse_manifest

FACTS = SHARED / "weights" / "timm_extra_weights.json"
ENTRIES = parse_manifest(packaged_manifest())  # torch-free and fast: fine at collection time
BY_NAME = {e.name: e for e in ENTRIES}


def _hf_model(source: str) -> str:
    """``hf://timm/resnet18.a1_in1k@rev/model.safetensors`` -> ``resnet18``."""
    return source.removeprefix("hf://timm/").split("@")[0].split(".")[0]


def _timm_pairs(ports: bool) -> set[tuple[str, str]]:
    """(timm model, zoo arch) mappings the manifest relies on: of timm's own weights, or of
    its ports of GluonCV's (the ``gluon_in1k`` fallbacks)."""
    return {
        (_hf_model(file.sources[0]), entry.arch)
        for entry in ENTRIES
        if (entry.tag == "gluon_in1k") == ports
        for artifact in entry.artifacts
        if artifact.format == "timm"
        for file in artifact.files
    }


def _timm_own(entry) -> str | None:
    """``model.tag`` when the entry is timm's own weights (not a port of another publisher's)."""
    for artifact in entry.artifacts:
        for file in artifact.files:
            model_tag = file.name.removesuffix(".safetensors")
            if artifact.format == "timm" and model_tag.split(".")[1] == entry.tag:
                return model_tag
    return None


# Mappings with a parity test elsewhere (test_resnet.TIMM_PAIRS, test_inception).
TESTED_ELSEWHERE = {(t, z) for t, kwargs, z in TIMM_PAIRS if not kwargs} | {
    ("inception_v3", "inceptionv3")
}
NEW_PAIRS = sorted(_timm_pairs(ports=False) - TESTED_ELSEWHERE)


# ------------------------------------------------------------------------- timm's own weights


@pytest.fixture(scope="module")
def facts() -> list[dict]:
    if not FACTS.is_file():
        pytest.skip(f"{FACTS} not present")
    return json.loads(FACTS.read_text())["weights"]


def test_every_fact_row_is_a_further_tag_with_its_eval_preprocessing(facts):
    for row in facts:
        entry = BY_NAME[f"{row['zoo_arch']}.{row['timm_tag']}"]
        size = row["test_input_size"] or row["input_size"]
        crop_pct = row["test_crop_pct"] if row["test_input_size"] else row["crop_pct"]
        expected = Preprocess(
            crop=size,
            resize=math.floor(size / crop_pct),  # timm rounds down
            interpolation=row["interpolation"],
            mean=tuple(row["mean"]),
            std=tuple(row["std"]),
        )
        assert entry.preprocess == expected, entry.name
        quoted = entry.metrics[0]  # the accuracy shown is the one measured that way
        assert (quoted.img_size, quoted.crop_pct, quoted.interpolation) == (
            size, crop_pct, row["interpolation"],
        ), entry.name  # fmt: skip
        row_at_size = next(r for r in row["results_imagenet"] if r["img_size"] == size)
        assert (quoted.top1, quoted.top5) == (row_at_size["top1"], row_at_size["top5"])
        assert entry.license == row["license"]
        assert entry.non_commercial == row["license"].startswith("cc-by-nc")
        (artifact,) = entry.artifacts
        (file,) = artifact.files
        assert artifact.format == "timm" and file.sources[0].startswith(f"hf://{row['hf_repo']}@")
        assert file.sha256 == row["sha256"]
        assert bool(file.unverified) == (row["sha256"] is None)  # else: trust on first use
    assert sum(e.non_commercial for e in ENTRIES) == sum(
        r["license"] == "cc-by-nc-4.0" for r in facts
    )


def test_gluon_ports_have_the_sha256_seen_for_them():
    seen = json.loads(FACTS.read_text())["manifest_weights_sha256_seen"] if FACTS.is_file() else []
    ported = {
        file.name.removesuffix(".safetensors"): file
        for e in ENTRIES
        for a in e.artifacts
        if a.format == "timm"
        for file in a.files
    }
    for row in seen:
        file = ported[row["timm_model_tag"]]
        assert (file.sha256, file.unverified) == (row["sha256"], ""), row["timm_model_tag"]


def test_timm_preprocessing_equals_timms_own_cfg():
    timm = pytest.importorskip("timm")
    checked = 0
    for entry in ENTRIES:
        model_tag = _timm_own(entry)
        if model_tag is None or entry.tag == "gluon_in1k":
            continue
        cfg = timm.models.get_pretrained_cfg(model_tag).to_dict()
        test = cfg.get("test_input_size")
        size = (test or cfg["input_size"])[1]
        crop_pct = cfg["test_crop_pct"] if test else cfg["crop_pct"]
        pre = entry.preprocess
        assert (pre.crop, pre.resize, pre.interpolation) == (
            size, math.floor(size / crop_pct), cfg["interpolation"],
        ), entry.name  # fmt: skip
        assert (pre.mean, pre.std) == (tuple(cfg["mean"]), tuple(cfg["std"])), entry.name
        assert entry.num_classes == cfg["num_classes"] and entry.label_offset == 0
        checked += 1
    assert checked == 56


def test_defaults(zoo_home):
    defaults = {e.arch: e.tag for e in load_entries([packaged_manifest()]) if e.default}
    # resnet18/34_v1d had no weights: timm's default tag for resnet18d/34d becomes theirs
    assert defaults["resnet18_v1d"] == defaults["resnet34_v1d"] == "ra2_in1k"
    # everywhere else timm's weights are further tags, never the default
    others = {tag for arch, tag in defaults.items() if arch not in ("resnet18_v1d", "resnet34_v1d")}
    assert others == {"gluon_in1k", "tflite_in1k"}
    assert set(defaults) == set(zoo.list_models(pretrained=True))


# -------------------------------------------------------------- preprocessing: one fact, one place


def test_rounding_is_the_publishers():
    assert Preprocess.from_crop_pct(299, 0.875).resize == 341  # timm: floor
    assert Preprocess.from_crop_pct(299, 0.875, round_up=True).resize == 342  # GluonCV: ceil
    assert get_spec("inceptionv3").preprocess.resize == 342
    assert BY_NAME["inceptionv3.gluon_in1k"].preprocess.resize == 342
    assert BY_NAME["inceptionv3.tf_in1k"].preprocess.resize == 341  # timm's eval of its port


def test_packaged_entries_state_preprocessing_only_where_it_differs():
    for entry in ENTRIES:
        if entry.own_preprocess is not None:
            assert entry.own_preprocess != get_spec(entry.arch).preprocess, entry.name
    for arch, crop in TF_CROP.items():  # the TF twins' input sizes live in TF_CROP only
        (entry,) = (e for e in ENTRIES if e.arch == arch)
        assert entry.own_preprocess is None and entry.preprocess.crop == crop


def _manifest(tmp_path: Path, version: int, entries: list[dict]) -> Path:
    path = tmp_path / f"v{version}.json"
    path.write_text(json.dumps({"format_version": version, "weights": entries}))
    return path


def _entry(arch: str, tag: str, artifact: dict, **extra) -> dict:
    return {
        "arch": arch, "tag": tag, "default": True, "num_classes": 1000, "labels": "imagenet-1k",
        "license": "apache-2.0", "provenance": "test", "artifacts": [artifact], **extra,
    }  # fmt: skip


ARTIFACT = {
    "format": "zoo",
    "files": [{"name": "a.safetensors", "sources": ["/a"], "sha256": "0" * 64}],
}


def test_omitted_preprocess_falls_back_to_the_arch(tmp_path, zoo_home):
    (entry,) = parse_manifest(_manifest(tmp_path, 2, [_entry("inceptionv3", "x_in1k", ARTIFACT)]))
    assert entry.own_preprocess is None
    assert entry.preprocess == get_spec("inceptionv3").preprocess
    # the packaged default (gluon_in1k) states none either
    resize = zoo.get_transforms("inceptionv3", pretrained=True).transforms[1]
    assert resize.size == [342]  # GluonCV's, the arch's, not a derived 341


def _parse_one(tmp_path: Path, version: int, **extra) -> list:
    return parse_manifest(
        _manifest(tmp_path, version, [_entry("resnet18_v1b", "a", ARTIFACT, **extra)])
    )


def test_preprocess_rules_per_format_version(tmp_path):
    partial = {"crop": 192, "resize": 219, "interpolation": "bicubic"}
    (old,) = _parse_one(tmp_path, 1, preprocess=partial)  # format 1 files read as they always did
    assert old.preprocess == Preprocess(crop=192, resize=219, interpolation="bicubic")
    with pytest.raises(ManifestError, match="format_version 1 needs 'preprocess'"):
        _parse_one(tmp_path, 1)
    # format 2: a given preprocess is complete, so its resize cannot be a borrowed one
    without_resize = {"crop": 288, "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3}
    with pytest.raises(ManifestError, match=r"preprocess: missing \['resize'\]"):
        _parse_one(tmp_path, 2, preprocess=without_resize)
    with pytest.raises(ManifestError, match=r"format_version 4 is not one this zoo reads"):
        parse_manifest(_manifest(tmp_path, 4, []))
    bad_metric = {"top1": 70.0, "dataset": "imagenet-1k-val", "source": "x", "img_size": "big"}
    with pytest.raises(ManifestError, match="img_size"):
        _parse_one(tmp_path, 2, metrics=[bad_metric])


def test_explicit_resize_reaches_the_model_and_its_transforms(
    tmp_path, http_server, zoo_home, monkeypatch
):
    timm = pytest.importorskip("timm")
    reference = randomize(timm.create_model("resnet18d")).eval()
    path = tmp_path / "r18d.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    data = path.read_bytes()
    url = http_server.add("/resnet18d.safetensors", data)
    file = {
        "name": "r18d.safetensors",
        "sources": [url],
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    pre = {
        "crop": 288,
        "resize": 303,
        "interpolation": "bicubic",
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
    }
    entry = _entry("resnet18_v1d", "x_in1k", {"format": "timm", "files": [file]}, preprocess=pre)
    monkeypatch.setenv("ZOO_MANIFESTS", str(_manifest(tmp_path, 2, [entry])))

    model = zoo.get_model("resnet18_v1d", pretrained="x_in1k").eval()
    assert model.pretrained_cfg.preprocess == Preprocess.from_dict(pre)
    steps = zoo.get_transforms(model).transforms
    resize, crop = steps[1], steps[2]
    assert (resize.size, resize.interpolation.value, crop.size) == ([303], "bicubic", (288, 288))
    assert steps[-1](torch.zeros(3, 1, 1)).flatten().tolist() == [-1.0] * 3  # mean = std = 0.5
    image = torch.randint(0, 256, (3, 400, 600), dtype=torch.uint8)
    x = zoo.get_transforms(model)(image)
    assert x.shape == (3, 288, 288)
    with torch.no_grad():
        torch.testing.assert_close(model(x[None]), reference(x[None]), atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------- parity of the arch mappings


def test_every_timm_mapping_has_a_parity_test():
    assert ("resnet34d", "resnet34_v1d") in NEW_PAIRS  # not tested elsewhere before issue 8
    assert len(NEW_PAIRS) == 7
    # The gluon_in1k ports' mappings (resnet101c -> resnet101_v1c, ...) predate timm's own
    # weights; the ones without a parity test are these (same family configs, other depths):
    untested_ports = _timm_pairs(ports=True) - TESTED_ELSEWHERE - set(NEW_PAIRS)
    assert {arch for _, arch in untested_ports} == {
        "resnet101_v1c", "resnet152_v1c", "resnet101_v1s", "resnet152_v1s",
        "se_resnext101_32x4d", "se_resnext101_64x4d",
    }  # fmt: skip


@pytest.mark.parametrize(("timm_name", "arch"), NEW_PAIRS, ids=[p[1] for p in NEW_PAIRS])
def test_timm_parity_random_weights(tmp_path, timm_name, arch):
    timm = pytest.importorskip("timm")
    with torch.device("meta"):  # skip both libraries' init: every tensor is overwritten
        reference = timm.create_model(timm_name, pretrained=False)
    reference = randomize(reference.to_empty(device="cpu")).eval()
    src = tmp_path / f"{timm_name}.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(src))
    converted = convert(src, model=arch, format="timm")
    with torch.device("meta"):
        ours = get_spec(arch).build(converted.config)
    ours.load_state_dict(converted.state_dict, strict=True, assign=True)
    # odd sizes all the way down, so ceil-mode average pools (avg_down) would show
    x = torch.randn(1, 3, 33, 33, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = reference(x), ours.eval()(x)
    scale = expected.abs().max().clamp(min=1.0)
    torch.testing.assert_close(actual / scale, expected / scale, atol=1e-4, rtol=0)
