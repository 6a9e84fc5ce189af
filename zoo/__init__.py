"""zoo: the Bag-of-Tricks model zoo for PyTorch.

>>> import zoo
>>> model = zoo.get_model("resnet50_v1d")
>>> zoo.list_models("resnet50_*")

``import zoo`` is cheap: the public names are loaded on first use (PEP 562), so the CLI and
``zoo.hub`` start without importing torch. To export a new name, add one line to ``_EXPORTS``
(and to the ``TYPE_CHECKING`` block, for type checkers and IDEs).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "EvalResult": "zoo.inference",
    "ModelInfo": "zoo.factory",
    "OptimizedModel": "zoo.optimization",
    "Prediction": "zoo.inference",
    "PretrainedCfg": "zoo.factory",
    "UnknownModelError": "zoo.registry",
    "evaluate": "zoo.inference",
    "export_model": "zoo.export",
    "freeze_bn": "zoo.transfer",
    "freeze_stages": "zoo.transfer",
    "get_model": "zoo.factory",
    "get_transforms": "zoo.transforms",
    "list_models": "zoo.api",
    "list_weights": "zoo.weights",
    "model_info": "zoo.factory",
    "optimize": "zoo.optimization",
    "predict": "zoo.inference",
    "save_model": "zoo.save",
    "sync_batchnorm": "zoo.transfer",
}

if TYPE_CHECKING:  # what type checkers and IDEs see; `X as X` marks a re-export
    from zoo.api import list_models as list_models
    from zoo.export import export_model as export_model
    from zoo.factory import ModelInfo as ModelInfo
    from zoo.factory import PretrainedCfg as PretrainedCfg
    from zoo.factory import get_model as get_model
    from zoo.factory import model_info as model_info
    from zoo.inference import EvalResult as EvalResult
    from zoo.inference import Prediction as Prediction
    from zoo.inference import evaluate as evaluate
    from zoo.inference import predict as predict
    from zoo.optimization import OptimizedModel as OptimizedModel
    from zoo.optimization import optimize as optimize
    from zoo.registry import UnknownModelError as UnknownModelError
    from zoo.save import save_model as save_model
    from zoo.transfer import freeze_bn as freeze_bn
    from zoo.transfer import freeze_stages as freeze_stages
    from zoo.transfer import sync_batchnorm as sync_batchnorm
    from zoo.transforms import get_transforms as get_transforms
    from zoo.weights import list_weights as list_weights

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"zoo.{name}") is not None:
        return importlib.import_module(f"zoo.{name}")  # e.g. zoo.registry after `import zoo`
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
