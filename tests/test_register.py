"""A finished run becomes hub weights (`zoo weights add`), and `zoo demo` does it all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import zoo
from zoo.cli import main as cli_main
from zoo.training.loop import train
from zoo.training.register import add_weights
from zoo.weights.manifest import parse_manifest


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) run on synthetic two-class images: red-ish vs blue-ish squares."""
    root = tmp_path_factory.mktemp("reg")
    data = root / "data"
    for split, n in (("train", 8), ("val", 4)):
        for c, colour in (("n01440764", (200, 30, 30)), ("n02102040", (30, 30, 200))):
            (data / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (24, 24), tuple(v + 5 * i for v in colour)).save(
                    data / split / c / f"{i}.png"
                )
    train("resnet18_v1d", data, recipe="imagenette", epochs=1, img_size=16, batch_size=4,
          overrides=["workers=0"], out=root / "run", progress=False)  # fmt: skip
    return root / "run"


def test_weights_add_registers_and_reloads(finished_run: Path, zoo_home: Path) -> None:
    added = add_weights(finished_run, "tiny_run")
    assert not added.default  # resnet18_v1d has packaged weights: not the default unless asked
    manifest = json.loads((zoo_home / "manifest.json").read_text())
    (entry,) = manifest["weights"]
    assert manifest["format_version"] == 3
    assert entry["labels"] == ["n01440764", "n02102040"]
    assert entry["label_names"] == ["tench", "English springer"]
    assert entry["training"]["recipe"]["name"] == "imagenette"
    assert len(entry["training"]["data_fingerprint"]) == 16
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert entry["metrics"][0]["top1"] == metrics["top1"]
    assert parse_manifest(zoo_home / "manifest.json")[0].labels == ("n01440764", "n02102040")
    model = zoo.get_model("resnet18_v1d", pretrained="tiny_run")
    direct = zoo.get_model("resnet18_v1d", pretrained=finished_run / "final.safetensors")
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(model.eval()(x), direct.eval()(x))
    assert model.pretrained_cfg.label_names == ("tench", "English springer")
    with pytest.raises(ValueError, match="already exists.*--force"):
        add_weights(finished_run, "tiny_run")
    again = add_weights(finished_run, "tiny_run", force=True)
    assert again.sha256 == added.sha256
    assert len(json.loads((zoo_home / "manifest.json").read_text())["weights"]) == 1


def test_default_only_when_asked_or_first(finished_run: Path, zoo_home: Path) -> None:
    first = add_weights(finished_run, "one")
    second = add_weights(finished_run, "two")
    assert not first.default and not second.default
    third = add_weights(finished_run, "three", default=True)
    assert third.default
    defaults = [w["tag"] for w in json.loads((zoo_home / "manifest.json").read_text())["weights"]
                if w["default"]]  # fmt: skip
    assert defaults == ["three"]
    assert zoo.get_model("resnet18_v1d", pretrained=True).pretrained_cfg.weights == "three"


def test_packaged_tag_cannot_be_shadowed(finished_run: Path, zoo_home: Path) -> None:
    packaged = next(w.tag for w in zoo.list_weights("resnet18_v1d"))
    with pytest.raises(ValueError, match="already defined in"):
        add_weights(finished_run, packaged)


def test_a_broken_local_manifest_does_not_break_the_catalogue(zoo_home: Path, capsys) -> None:
    zoo_home.mkdir(parents=True, exist_ok=True)
    (zoo_home / "manifest.json").write_text('{"format_version": 3, "weights": [{"arch": 1}]}')
    assert zoo.list_weights("resnet50_v1d")  # the packaged entries are still there
    code = cli_main(["weights", "add", str(zoo_home), "--tag", "x"])
    assert code != 0 and "no finished run" in capsys.readouterr().err


def test_cli_weights_add(finished_run: Path, zoo_home: Path, capsys) -> None:
    assert cli_main(["weights", "add", str(finished_run), "--tag", "cli_tag", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tag"] == "cli_tag" and Path(out["file"]).is_file()


def test_demo_runs_end_to_end_twice(tmp_path: Path, zoo_home: Path, monkeypatch) -> None:
    pytest.importorskip("sklearn")
    from zoo.training.demo import DEMO_TAG, run_demo

    for _ in range(2):  # running it twice is fine: same tag, replaced
        result = run_demo(tmp_path / "demo", epochs=1, progress=False)
    assert result.home == tmp_path / "demo" / "home"
    assert sum(1 for _ in (result.data / "val").glob("*/*.png")) == 360
    assert (result.run_dir / "final.safetensors").is_file()
    manifest = json.loads((result.home / "manifest.json").read_text())
    assert [w["tag"] for w in manifest["weights"]] == [DEMO_TAG]
    assert len(result.predictions) == 6
    assert all(p[2] in [str(d) for d in range(10)] for p in result.predictions)
    assert result.top1 > 30  # one epoch; the full demo (6 epochs) reaches >= 95 %
