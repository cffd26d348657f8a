"""Dynamic layers: each holds the largest augmented model's weights and computes with their leading slices.

A conv or linear layer reads its input width from the tensor and writes `active_out` channels (set by the
augmented model's `set_active`); a BatchNorm normalises the input's leading channels and updates their running
statistics in place. A BatchNorm subclass with a forward of its own (timm's BatchNormAct2d) gets a class whose
forward sees its parameters and statistics cut to the input's channels.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DynamicConv2d(nn.Conv2d):
    """A conv over the input's leading channels writing `active_out` channels (dense), or a grouped conv
    whose active groups follow the input (depthwise included)."""

    active_out: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias, groups = self.weight, self.bias, self.groups
        c = x.shape[1]
        if groups == 1:
            if self.active_out != weight.shape[0] or c != weight.shape[1]:
                weight = weight[: self.active_out, :c]
                bias = bias[: self.active_out] if bias is not None else None
        else:
            per_in, per_out = weight.shape[1], weight.shape[0] // groups
            groups = c // per_in
            if groups != self.groups:
                weight = weight[: groups * per_out]
                bias = bias[: groups * per_out] if bias is not None else None
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, groups)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)


class DynamicLinear(nn.Linear):
    """A linear layer over the input's leading features writing `active_out` features."""

    active_out: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, o = x.shape[-1], self.active_out
        if f == self.weight.shape[1] and o == self.weight.shape[0]:
            return F.linear(x, self.weight, self.bias)
        return F.linear(x, self.weight[:o, :f], self.bias[:o] if self.bias is not None else None)


PREFIX_VIEWED = ("weight", "bias", "running_mean", "running_var")
_PREFIX_CLASSES: dict[type, type] = {}


def prefix_view_class(cls: type[nn.Module]) -> type[nn.Module]:
    """A subclass of a BatchNorm subclass with its own forward (timm's BatchNormAct2d) whose forward
    sees weight, bias and running statistics cut to the input's channels (views: running statistics
    update in place)."""
    if cls not in _PREFIX_CLASSES:
        def forward(self, x: torch.Tensor, *args, **kwargs):
            self.__dict__["_prefix"] = x.shape[1]
            try:
                return cls.forward(self, x, *args, **kwargs)
            finally:
                self.__dict__["_prefix"] = None

        def __getattr__(self, name: str):
            value = nn.Module.__getattr__(self, name)
            c = self.__dict__.get("_prefix")
            if c is not None and name in PREFIX_VIEWED and value is not None and value.shape[0] != c:
                return value[:c]
            return value

        _PREFIX_CLASSES[cls] = type(f"Dynamic{cls.__name__}", (cls,), {"forward": forward, "__getattr__": __getattr__,
                                                                        "__module__": __name__})
    return _PREFIX_CLASSES[cls]


class DynamicNorm:
    """BatchNorm over the input's leading channels (mixed into a BatchNorm class); running statistics
    of those channels are updated in place."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        else:
            factor = 0.0
        use_batch_stats = self.training or not self.track_running_stats
        mean = self.running_mean[:c] if self.running_mean is not None else None
        var = self.running_var[:c] if self.running_var is not None else None
        weight = self.weight[:c] if self.weight is not None else None
        bias = self.bias[:c] if self.bias is not None else None
        return F.batch_norm(x, mean, var, weight, bias, use_batch_stats, factor, self.eps)


class DynamicBatchNorm2d(DynamicNorm, nn.BatchNorm2d):
    """BatchNorm2d over the input's channels."""


class DynamicBatchNorm1d(DynamicNorm, nn.BatchNorm1d):
    """BatchNorm1d over the input's features."""
