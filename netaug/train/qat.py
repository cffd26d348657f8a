"""Quantization-aware fine-tuning of an exported base with torch.ao's FX QAT.

`prepare_qat_fx` folds each conv with its BatchNorm (ConvBn2d, BN statistics still training) and
inserts fake quantization that mirrors the int8 deployment: per-channel symmetric int8 weights
(-127..127, as onnxruntime's symmetric weights) and per-tensor affine int8 activations. The
fake-quantized network trains with the project's one training loop (plain training, the arm's own
data pipeline). Its float weights and BatchNorm buffers then go back into the plain network, which
the deployment's post-training quantization exports again: with weights fine-tuned to the grid,
the same calibration gives the int8 model.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings

import torch
import torch.nn as nn

from netaug.config import SpaceConfig
from netaug.data import DataSplits


class FakeQuantNet(nn.Module):
    """A prepared (fake-quantized) GraphModule with the trainer's `forward_with_features` interface."""

    def __init__(self, prepared: nn.Module) -> None:
        super().__init__()
        self.net = prepared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x)  # plain training reads only the logits
        return logits, logits


def _qconfig_mapping():
    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization.fake_quantize import FakeQuantize
    from torch.ao.quantization.observer import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver

    activation = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=-128, quant_max=127,
                                        dtype=torch.qint8, qscheme=torch.per_tensor_affine)
    weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-127, quant_max=127,
                                    dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    return QConfigMapping().set_global(QConfig(activation=activation, weight=weight))


def prepare_qat(model: nn.Module, input_shape: tuple[int, int, int]) -> nn.Module:
    """torch.ao FX QAT preparation of a copy of `model` (conv + BN folded, fake quantization inserted)."""
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice, once per call
        return prepare_qat_fx(copy.deepcopy(model).cpu().train(), _qconfig_mapping(), (torch.zeros(2, *input_shape),))


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str | None]]:
    """(conv name, name of the BatchNorm right after it in registration order, or None) for every conv."""
    modules = list(model.named_modules())
    pairs = []
    for i, (name, module) in enumerate(modules):
        if isinstance(module, nn.Conv2d):
            nxt = modules[i + 1] if i + 1 < len(modules) else None
            pairs.append((name, nxt[0] if nxt is not None and isinstance(nxt[1], nn.BatchNorm2d) else None))
    return pairs


def unprepare(prepared: nn.Module, like: nn.Module) -> nn.Module:
    """A copy of the plain network `like` holding the float weights and BatchNorm buffers of `prepared`."""
    out = copy.deepcopy(like).cpu()
    qat = dict(prepared.named_modules())
    with torch.no_grad():
        for conv_name, bn_name in conv_bn_pairs(out):
            source = qat[conv_name]
            conv = out.get_submodule(conv_name)
            conv.weight.copy_(source.weight)
            if conv.bias is not None:
                conv.bias.copy_(source.bias)
            if bn_name is not None:
                out.get_submodule(bn_name).load_state_dict(source.bn.state_dict())
        for name, module in out.named_modules():
            if isinstance(module, nn.Linear):
                module.weight.copy_(qat[name].weight)
                if module.bias is not None:
                    module.bias.copy_(qat[name].bias)
    return out.eval()


def qat_finetune(model: nn.Module, cfg: SpaceConfig, data: DataSplits, epochs: int, lr: float) -> nn.Module:
    """Fine-tune `model` for `epochs` epochs with fake quantization (plain training, cosine from `lr`, no
    warm-up, this process alone); returns the plain network with the fine-tuned weights."""
    from netaug.train.trainer import Trainer

    shape = (data.in_channels, data.resolution, data.resolution)
    prepared = prepare_qat(model, shape)
    training = dataclasses.replace(cfg.training, epochs=epochs, lr=lr, warmup_epochs=0.0, channels_last=False)
    trainer = Trainer(dataclasses.replace(cfg, training=training), data, mode="baseline",
                      base=FakeQuantNet(prepared), local=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            trainer.train_epoch()
    return unprepare(prepared.cpu(), model)
