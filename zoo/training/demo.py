"""``zoo demo``: the whole life of a model on a fresh machine, in about a minute on 2 CPU cores.

Real data without a download beyond pip: scikit-learn's bundled handwritten digits (1,797 8×8
images, 10 classes) are written out as an ImageFolder tree. A zoo ResNet is trained on them with
the ``bag_of_tricks`` recipe, shortened, with an augmentation fit for 8×8 digits (gentle crops,
no flips: a mirrored 2 is no 2; no colour jitter on grey images) and without mixup (it needs
long runs to pay off). The run is registered as hub weights in the demo's own ``ZOO_HOME``,
reloaded by tag through ``zoo.get_model`` and used to predict held-out digits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEMO_TAG = "demo_digits"
DIGITS_OVERRIDES = (
    'augment.name="digits"',
    "augment.scale=[0.7, 1.0]",
    "augment.ratio=[0.85, 1.18]",
    "augment.hflip=0.0",
    "augment.color_jitter=0.0",
    "augment.lighting=0.0",
    "tricks.mixup_alpha=0.0",
    "optim.lr=0.1",  # at batch_size 64: small data wants more steps at a higher LR than
    "batch_size=64",  # the paper's 0.4 x 64/1024
    "workers=1",
)


@dataclass(frozen=True)
class DemoResult:
    data: Path
    run_dir: Path
    home: Path
    tag: str
    top1: float
    predictions: list[tuple[str, str, str, float]]  # image, truth, predicted, probability


def write_digits(root: Path, val_every: int = 5) -> Path:
    """scikit-learn's digits as ``root/{train,val}/<digit>/<i>.png`` (every 5th image to val)."""
    from zoo.training.loop import TrainingError

    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise TrainingError(
            "zoo demo reads scikit-learn's digits: pip install 'zoo[demo]'"
        ) from None
    import numpy as np
    from PIL import Image

    digits = load_digits()
    if (root / ".complete").is_file():
        return root
    for i, (image, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        split = "val" if i % val_every == 0 else "train"
        folder = root / split / str(target)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image * (255.0 / 16.0)).round().astype(np.uint8)  # digits are 0..16
        Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
    (root / ".complete").touch()
    return root


def run_demo(
    out: str | Path = "zoo-demo",
    *,
    model: str = "resnet18_v1d",
    epochs: float = 6,
    img_size: int = 32,
    progress: bool = True,
) -> DemoResult:
    import zoo
    from zoo.training.loop import train
    from zoo.training.register import add_weights

    out = Path(out).expanduser().resolve()
    data = write_digits(out / "digits")
    home = out / "home"
    os.environ["ZOO_HOME"] = str(home)  # the demo's own hub: nothing else is touched
    run = out / "run"
    if run.exists():  # running the demo twice starts the run afresh
        import shutil

        shutil.rmtree(run)
    result = train(model, data, recipe="bag_of_tricks", overrides=DIGITS_OVERRIDES,
                   epochs=epochs, img_size=img_size, out=run,
                   progress=progress)  # fmt: skip
    add_weights(run, DEMO_TAG, default=True, force=True, license="bsd-3-clause (digits data)")
    trained = zoo.get_model(model, pretrained=DEMO_TAG)
    samples = sorted((data / "val").glob("*/*.png"))[::40][:6]
    predictions = []
    for path, (best, *_) in zip(samples, zoo.predict(trained, samples, topk=1), strict=True):
        predictions.append((str(path), path.parent.name, best.label, best.probability))
    return DemoResult(data, run, home, DEMO_TAG, result.metrics["top1"], predictions)
