"""``features_only``: a zoo model cut after its last wanted stage, returning feature maps.

Index ``i`` of ``out_indices`` is the stage at nominal stride ``2 ** (i + 1)`` (0: stride 2 ...
4: stride 32) in every family; ``feature_info`` lists the chosen ones (channels, and the real
reduction: a dilated stage of an ``output_stride`` 8/16 backbone keeps it at ``output_stride``).

:class:`FeatureListNet` holds the very modules of the classifier it was cut from, under the same
names, so its state-dict keys are the classifier's minus the head and the unused stages: weights
are loaded into the whole classifier first (any weights source), then the head is dropped. Its
``forward`` is a straight run over those modules, so ``torch.fx`` traces it.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import torch
from torch import nn

from zoo.models.layers import ClassifierModel, CommonConfig, FeatureInfo, PretrainedCfg

NUM_STAGES = 5  # nominal strides 2, 4, 8, 16, 32 in every family


def check_out_indices(out_indices: Sequence[int]) -> tuple[int, ...]:
    """``out_indices`` as a tuple, refused unless increasing stage indices in 0..4."""
    indices = tuple(out_indices)
    valid = all(isinstance(i, int) and not isinstance(i, bool) for i in indices)
    if not indices or not valid or any(not 0 <= i < NUM_STAGES for i in indices):
        raise ValueError(
            f"out_indices must be stage indices in 0..{NUM_STAGES - 1} (i = the feature at "
            f"stride 2**(i+1)), got {out_indices!r}"
        )
    if list(indices) != sorted(set(indices)):
        raise ValueError(f"out_indices must be increasing and distinct, got {out_indices!r}")
    return indices


class FeatureListNet(nn.Module):
    """The stem and stages of a zoo classifier; ``forward`` returns the chosen feature maps."""

    def __init__(self, model: ClassifierModel, out_indices: Sequence[int]) -> None:
        super().__init__()
        self.out_indices = check_out_indices(out_indices)
        self.stage_info: list[FeatureInfo] = list(model.feature_info)  # all five stages
        self.feature_info: list[FeatureInfo] = [self.stage_info[i] for i in self.out_indices]
        self.config: CommonConfig = model.config
        self.pretrained_cfg: PretrainedCfg | None = model.pretrained_cfg
        self.first_conv = model.first_conv
        # The family's size arithmetic, unbound: a bound method would keep the whole
        # classifier (head and dropped stages) alive inside the backbone.
        self._size_rule = type(model).feature_sizes
        sequence = model.feature_sequence()
        wanted = {f.module for f in self.feature_info}
        last = max(sequence.index(f.module) for f in self.feature_info)
        self.sequence = sequence[: last + 1]
        for top, count in _top_level(self.sequence):
            child = model.get_submodule(top)
            if count and count < len(child):  # only the first blocks of a Sequential are used
                child = child[:count]
            self.add_module(top, child)
        # Looked up by name at each call: freeze_bn / freeze_stages may swap a module.
        self._steps = [(n, n in wanted) for n in self.sequence]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for name, keep in self._steps:
            x = self.get_submodule(name)(x)
            if keep:
                features.append(x)
        return features

    def feature_sequence(self) -> list[str]:
        return list(self.sequence)

    def feature_sizes(self, size: int) -> tuple[int, ...]:
        """Spatial size of each returned map for an input side of ``size`` pixels."""
        sizes = self._size_rule(SimpleNamespace(feature_info=self.stage_info), size)
        return tuple(sizes[i] for i in self.out_indices)


def _top_level(sequence: Sequence[str]) -> list[tuple[str, int]]:
    """(top-level child, how many of its numbered children are used; 0 = the child itself)."""
    counts: dict[str, int] = {}
    for name in sequence:
        top, _, rest = name.partition(".")
        counts.setdefault(top, 0)
        if rest:
            if rest != str(counts[top]):
                raise ValueError(f"feature_sequence must list {top}'s children in order: {name}")
            counts[top] += 1
    return list(counts.items())


__all__ = ["NUM_STAGES", "FeatureListNet", "check_out_indices"]
