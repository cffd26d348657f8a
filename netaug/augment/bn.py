"""BatchNorm recalibration of the active sub-network (the official `reset_bn`)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Re-estimate BatchNorm running statistics of the active sub-network from `batches`, as the
    official `reset_bn`: each BatchNorm's running mean is the batch-size-weighted average of the
    per-batch means of its input and its running variance the same average of the *biased*
    per-batch variances (what the layer normalises with in training). The network runs with
    dropout off and BatchNorm on batch statistics; only the leading channels the active sub-network
    uses are written, the rest keep their values (recalibrate again before evaluating another
    sub-network). `num_batches_tracked` is left as it was.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    sums: dict[nn.Module, list] = {bn: [0.0, 0.0, 0] for bn in bns}  # weighted mean, weighted var, images

    def observe(bn: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0]
        dims = (0, *range(2, x.dim()))  # every dimension but the channels (BatchNorm1d and 2d)
        mean = x.mean(dim=dims)
        var = (x - mean.view(1, -1, *[1] * (x.dim() - 2))).square().mean(dim=dims)
        acc = sums[bn]
        n = x.shape[0]
        acc[0], acc[1], acc[2] = acc[0] + mean * n, acc[1] + var * n, acc[2] + n

    saved = [(bn.momentum, bn.training, bn.num_batches_tracked.clone()) for bn in bns]
    was_training = model.training
    hooks = [bn.register_forward_pre_hook(observe) for bn in bns]
    model.eval()
    for bn in bns:
        bn.train()  # normalise with batch statistics, as in training
        bn.momentum = 0.0  # and leave the running statistics alone while observing
    try:
        for x in batches:
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
        for bn, (momentum, training, tracked) in zip(bns, saved):
            bn.momentum = momentum
            bn.train(training)
            bn.num_batches_tracked.copy_(tracked)
        model.train(was_training)
    for bn, (mean_sum, var_sum, n) in sums.items():
        if n:
            c = mean_sum.shape[0]
            bn.running_mean[:c].copy_(mean_sum / n)
            bn.running_var[:c].copy_(var_sum / n)
