"""Saving and loading an exported base model: its state_dict plus everything needed to rebuild it."""

from __future__ import annotations

from pathlib import Path

import torch

from netaug.augment.generic import ModuleNet
from netaug.data import DataSplits
from netaug.errors import UserError
from netaug.io import atomic_path
from netaug.models import InvertedResidualNet, MCUNet, MobileNetV2, MobileNetV3, NetSpec, ProxylessNASMobile
from netaug.models.user import load_factory

CLASSES = {cls.__name__: cls for cls in (MobileNetV2, MobileNetV3, ProxylessNASMobile, MCUNet, InvertedResidualNet)}


def save_exported(path: str | Path, model: InvertedResidualNet | ModuleNet, data: DataSplits,
                  extra: dict | None = None) -> None:
    """Write `model` with its class, spec and input normalisation (to a temporary name, then rename)."""
    path = Path(path)
    if isinstance(model, ModuleNet):  # a user's own module: its factory rebuilds it, its own keys load
        described = {"class": "module", "source": model.source, "classifier": model.classifier}
        weights = model.net.state_dict()
    else:
        described = {"class": type(model).__name__, "spec": model.spec.to_dict()}
        weights = model.state_dict()
    payload = {
        **described,
        "state_dict": {k: v.detach().cpu() for k, v in weights.items()},
        "input": {"channels": data.in_channels, "resolution": data.resolution,
                  "mean": list(data.mean), "std": list(data.std)},
        **(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_exported(path: str | Path) -> tuple[InvertedResidualNet | ModuleNet, dict]:
    """Rebuild an exported model (in eval mode) and return it with the saved payload."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such exported model: {path}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload["class"] == "module":
        src, shape = payload["source"], payload["input"]
        net = load_factory(src["factory"])(**src["kwargs"])
        net.load_state_dict(payload["state_dict"])
        model = ModuleNet(net, (shape["channels"], shape["resolution"], shape["resolution"]), src,
                          payload["classifier"])
        return model.eval(), payload
    model = CLASSES.get(payload["class"], InvertedResidualNet)(NetSpec.from_dict(payload["spec"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload
