"""Architecture families. Importing a family module registers its config table."""

from zoo.models import inception, mobilenet, mobilenetv3, resnet  # noqa: F401
