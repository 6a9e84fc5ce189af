"""Architecture families. Importing a family module registers its config table."""

from zoo.models import resnet  # noqa: F401
