"""zoo: the Bag-of-Tricks model zoo for PyTorch.

>>> import zoo
>>> model = zoo.get_model("resnet50_v1d")
>>> zoo.list_models("resnet50_*")
"""

from zoo.factory import ModelInfo, PretrainedCfg, get_model, model_info
from zoo.inference import EvalResult, Prediction, evaluate, predict
from zoo.registry import UnknownModelError, list_models
from zoo.transforms import get_transforms
from zoo.weights import list_weights

__version__ = "0.1.0"

__all__ = [
    "EvalResult",
    "ModelInfo",
    "Prediction",
    "PretrainedCfg",
    "UnknownModelError",
    "__version__",
    "evaluate",
    "get_model",
    "get_transforms",
    "list_models",
    "list_weights",
    "model_info",
    "predict",
]
