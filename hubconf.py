"""torch.hub entry points: one per registered zoo architecture.

torch.hub.load("path/to/zoo", "resnet50_v1d", source="local", pretrained=False)
"""

from collections.abc import Callable

from torch import nn

from zoo import get_model
from zoo.registry import ModelSpec, all_specs

dependencies = ["torch", "torchvision", "safetensors", "huggingface_hub", "requests"]


def _entrypoint(spec: ModelSpec) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool | str = False, **kwargs) -> nn.Module:
        return get_model(spec.name, pretrained=pretrained, **kwargs)

    aliases = f" Also known as: {', '.join(spec.aliases)}." if spec.aliases else ""
    entrypoint.__name__ = entrypoint.__qualname__ = spec.name
    entrypoint.__doc__ = (
        f"{spec.doc or spec.name}.{aliases}\n\n"
        "Args:\n"
        "    pretrained: False (random init), True (default weights), a weights tag, or the\n"
        "        path of a zoo-layout .safetensors file.\n"
        f"    **kwargs: config overrides, e.g. num_classes=10, zero_init_last=True; see\n"
        f"        zoo.model_info({spec.name!r}).config for every option.\n"
    )
    return entrypoint


for _spec in all_specs():
    globals()[_spec.name] = _entrypoint(_spec)
del _spec
