"""zoo finetune-dense on coco128_detseg: metrics against their definitions, runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import SHARED
from test_train import run_cli

COCO128 = SHARED / "data" / "coco128_detseg"
needs_coco128 = pytest.mark.skipif(not COCO128.is_dir(), reason="../shared coco128_detseg")
pycocotools = pytest.importorskip("pycocotools", reason="the detection extra")


def mini(tmp_path: Path, train: int, val: int) -> Path:
    """A COCO-format folder of symlinks to coco128's s320 files, with shorter split lists."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "splits").mkdir()
    for name in ("images", "masks_voc21"):
        (root / name).symlink_to(COCO128 / "s320" / name)
    ann = COCO128 / "s320" / "annotations" / "instances_s320.json"
    (root / "annotations" / ann.name).symlink_to(ann)
    for split, n in (("train", train), ("val", val)):
        names = (COCO128 / "splits" / f"{split}.txt").read_text().split()[:n]
        (root / "splits" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def test_miou_and_pixel_accuracy_by_hand():
    from zoo.dense.metrics import confusion, segmentation_metrics

    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    m = segmentation_metrics(confusion(pred, target, 3))
    # IoU: class 0: 1 / 3, class 1: 2 / 3, class 2: 1 / 2; 4 of 6 labelled pixels right
    assert m["miou"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 1 / 2) / 3, abs=1e-3)
    assert m["pixel_acc"] == pytest.approx(100 * 4 / 6, abs=1e-3)


@pytest.mark.parametrize("clip", [0.0, 0.5, 100.0])
def test_sgd_step_clips_the_gradient_norm(clip: float) -> None:
    from zoo.dense.loop import sgd_step

    w = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([w], lr=1.0, momentum=0.9)
    loss = (w * torch.tensor([3.0, 4.0])).sum()  # gradient (3, 4), norm 5
    assert sgd_step(loss, optimizer, [w], clip) == pytest.approx(5.0)
    scale = min(1.0, clip / 5.0) if clip else 1.0  # the first momentum step is the gradient
    assert torch.allclose(w.detach(), -scale * torch.tensor([3.0, 4.0]), atol=1e-5)


@needs_coco128
def test_ground_truth_as_detections_scores_100_and_misses_score_0():
    from zoo.dense.data import CocoData
    from zoo.dense.metrics import detection_metrics

    data = CocoData.open(COCO128 / "s320")
    val = [data.images[f] for f in data.splits["val"]]
    perfect = [
        {"image_id": i, "category_id": data.category_ids[label - 1],
         "bbox": [x1, y1, x2 - x1, y2 - y1], "score": 1.0}
        for i in val for (x1, y1, x2, y2), label in data.boxes[i]
    ]  # fmt: skip
    m = detection_metrics(data.annotations, val, perfect, person_id=1)
    assert m == {"coco_map": 100.0, "map_50": 100.0, "person_ap_50": 100.0}
    shifted = [{**d, "bbox": [d["bbox"][0] + 1000, *d["bbox"][1:]]} for d in perfect]
    assert detection_metrics(data.annotations, val, shifted, person_id=1)["map_50"] == 0.0


@needs_coco128
def test_detection_and_segmentation_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = mini(tmp_path, train=4, val=2)
    common = ["--data", str(data), "--epochs", "1", "--batch-size", "2", "--quiet", "--json"]
    det = ["finetune-dense", "--task", "detection", "--model", "mobilenet0_25", "--min-size", "96"]
    code, out = run_cli([*det, *common, "--out", str(tmp_path / "det")], capsys)
    assert code == 0, out
    metrics = json.loads(out[out.index("{") :])
    assert {"person_ap_50", "map_50", "coco_map"} <= set(metrics) and metrics["classes"] == 81
    record = json.loads((tmp_path / "det" / "log.jsonl").read_text().splitlines()[-1])
    assert record["grad_norm_max"] > 0 and 0 <= record["clipped_steps"] <= 2  # 2 steps
    for name in (
        "run.json",
        "log.jsonl",
        "metrics.json",
        "plot.png",
        "last.ckpt",
        "final.safetensors",
    ):
        assert (tmp_path / "det" / name).is_file(), name
    seg = [
        "finetune-dense",
        "--task",
        "segmentation",
        "--model",
        "mobilenetv2_0_25",
        "--crop",
        "64",
    ]
    code, out = run_cli(
        [*seg, *common, "--head", "deeplabv3", "--out", str(tmp_path / "seg")], capsys
    )
    assert code == 0, out
    metrics = json.loads(out[out.index("{") :])
    assert (
        metrics["classes"] == 21 and 0 <= metrics["miou"] <= 100 and metrics["head"] == "deeplabv3"
    )
    # a finished run resumes to nothing new; a folder that is not a run is refused
    code, out = run_cli(["finetune-dense", "--resume", str(tmp_path / "seg"), "--quiet"], capsys)
    assert code == 0 and len((tmp_path / "seg" / "log.jsonl").read_text().splitlines()) == 1
    code, out = run_cli(["finetune-dense", "--resume", str(tmp_path)], capsys)
    assert code == 2 and "not a finetune-dense run" in out


@needs_coco128
def test_bad_dense_input_gives_one_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = mini(tmp_path, train=2, val=1)
    (data / "splits" / "val.txt").unlink()
    base = ["finetune-dense", "--task", "segmentation", "--model", "mobilenet0_25"]
    code, out = run_cli([*base, "--data", str(data), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "splits/val.txt" in out and "Traceback" not in out
    code, out = run_cli([*base, "--data", str(COCO128 / "s320"), "--masks", "ade"], capsys)
    assert code == 2 and "masks 'ade'" in out and "voc21" in out
    code, out = run_cli([*base, "--data", str(COCO128 / "s320"), "--clip-grad-norm", "-1"], capsys)
    assert code == 2 and "clip_grad_norm" in out and "Traceback" not in out
