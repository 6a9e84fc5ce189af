"""Public functions that compose layers which must not know each other.

The registry (models) sits below the weights catalogue, so "which architectures have weights"
is answered here, where both are visible, rather than by the registry importing the weights.
"""

from __future__ import annotations

from collections.abc import Iterable

from zoo import registry


def list_models(pattern: str | Iterable[str] = "*", *, pretrained: bool = False) -> list[str]:
    """Canonical names matching fnmatch ``pattern`` (or any of several patterns), sorted.

    ``pretrained=True`` keeps only architectures that have weights in the catalogue.
    """
    names = registry.list_models(pattern)
    if not pretrained:
        return names
    from zoo.weights import archs_with_weights

    have = archs_with_weights()
    return [n for n in names if n in have]
