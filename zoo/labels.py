"""Class names: ImageNet-1k ships inside the package; other weights carry their own names."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class LabelSet:
    names: tuple[str, ...]
    # Class ids that data folders are named by: WordNet ids for ImageNet synsets.
    wnids: tuple[str, ...] | None = None

    def index_of_wnid(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.wnids or ())}


@cache
def imagenet1k() -> LabelSet:
    """The 1000 ImageNet classes in the standard order (sorted WordNet ids)."""
    text = resources.files("zoo").joinpath("data/imagenet1k.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines()[1:]]
    return LabelSet(names=tuple(r[2] for r in rows), wnids=tuple(r[1] for r in rows))


NAMED_SETS = {"imagenet-1k": imagenet1k}


def resolve_labels(
    labels: str | tuple[str, ...] | None, names: tuple[str, ...] | None = None
) -> LabelSet | None:
    """A label-set name ("imagenet-1k"), or class ids with optional display ``names``.

    Without ``names`` the ids are shown (files written before names were stored separately
    keep their names in ``labels``).
    """
    if labels is None:
        return None
    if isinstance(labels, str):
        if labels not in NAMED_SETS:
            raise ValueError(f"unknown label set {labels!r}; known: {sorted(NAMED_SETS)}")
        return NAMED_SETS[labels]()
    return LabelSet(names=tuple(names or labels), wnids=tuple(labels))
