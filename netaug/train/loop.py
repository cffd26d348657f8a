"""NetAug in your own training loop: the Trainer's recipe (netaug/train/recipe.py) around your model.

    from netaug import NetAug

    na = NetAug(model, r=3, s=2, example_input=x[:1], epochs=epochs)
    optimizer = torch.optim.SGD(na.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    for epoch in range(epochs):
        na.on_epoch_start(epoch, optimizer)          # channel sorting; the min_w phase follows the epoch
        for x, y in loader:
            optimizer.zero_grad()
            losses = na.backward(x, y)               # base CE + alpha x the sampled augmented model's CE
            optimizer.step()
    na.prepare_eval(x for x, _ in calibration_loader)  # BatchNorm statistics of the base
    trained = na.export()                            # an instance of your class, your state_dict keys

The passes, the sub-network draws and the schedule are the Trainer's own (the same Recipe object), so the
same seed and batches give the same weights as `python -m netaug.train` (tests/test_loop.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn

from netaug.config import load_space


class NetAug:
    """NetAug's recipe for a user's model (any nn.Module from (B, C, H, W) images to logits that torch.fx traces).

    Keyword arguments set `netaug.*` keys of the space schema (docs/spaces.md: `alpha` is `aug_loss_weight`), or
    `training.*` keys through `epochs`, `warmup_epochs`, `seed` and `label_smoothing`; bad values are a
    UserError naming the key. The model you pass is not modified: NetAug trains a widened copy, and
    `export()` gives the trained base (or loads it `into` your object).
    """

    def __init__(self, model: nn.Module, r: float = 3.0, s: int = 2, example_input: torch.Tensor | None = None, *,
                 epochs: int, warmup_epochs: float = 0.0, alpha: float = 1.0, seed: int = 0,
                 label_smoothing: float = 0.1, freeze: list[str] | tuple[str, ...] = (), **netaug_keys) -> None:
        from netaug.augment import augment_module, netaug_grids
        from netaug.train.recipe import Recipe

        if example_input is None:
            raise ValueError("NetAug needs example_input: one (1, C, H, W) batch, to trace the model")
        overrides = [f"training.epochs={epochs}", f"training.warmup_epochs={warmup_epochs}", f"training.seed={seed}",
                     f"training.label_smoothing={label_smoothing}", "training.mode=netaug", f"netaug.r={r}",
                     f"netaug.s={s}", f"netaug.aug_loss_weight={alpha}"]
        overrides += [f"netaug.{k}={v}" for k, v in netaug_keys.items()]
        self.cfg = load_space(None, overrides)
        device = next(model.parameters()).device
        widths, expands = netaug_grids(self.cfg.netaug)
        n = self.cfg.netaug
        self.model = augment_module(model, widths, expands, example_input, n.mid_width, n.init, tuple(freeze))
        self.recipe = Recipe(self.model, "netaug", self.cfg, device)
        self.step_index = 0
        self.epoch = 0

    def parameters(self):
        """The augmented model's parameters (the base's are their leading slices): give these to your optimizer."""
        return self.model.parameters()

    def on_epoch_start(self, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        """Call at the start of each epoch: sorts channels in width-augmented epochs; from NetAug's last
        epochs on (`netaug.min_w_fraction`), the sampled models keep the base's widths."""
        self.epoch = epoch
        self.recipe.on_epoch_start(epoch, optimizer)

    def backward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step's passes on a batch (after your optimizer.zero_grad(), before its step()): the base's
        cross-entropy, then alpha x each sampled augmented model's; the gradients accumulate. Returns the
        losses as 0-d tensors."""
        self.model.train()
        configs = self.recipe.sample(self.step_index, self.epoch)
        losses = self.recipe.passes(x, y, configs)
        self.step_index += 1
        return losses

    def prepare_eval(self, batches: Iterable[torch.Tensor]) -> nn.Module:
        """Recalibrate the base's BatchNorm statistics on training batches (inputs only) and put the base in
        eval mode; returns the model, which computes the base until another backward()."""
        from netaug.augment import recalibrate_bn

        self.model.set_active("min")
        recalibrate_bn(self.model, list(batches))
        return self.model.eval()

    def export(self, into: nn.Module | None = None) -> nn.Module:
        """The trained base as an instance of your class (your state_dict keys); `into`: your own object gets
        the trained weights (load_state_dict, strict) and is returned."""
        trained = self.model.export("min")
        if into is None:
            return trained
        into.load_state_dict(trained.state_dict(), strict=True)
        return into
