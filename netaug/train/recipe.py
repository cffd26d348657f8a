"""The NetAug recipe of one training step: which sub-networks a step trains, and their forward and backward
passes. The Trainer runs every step through it, and `netaug.NetAug` gives it to a user's own loop, so there is
one implementation of the recipe.

Per step: the sub-networks are drawn (NetAug: `aug_samples` random ones, base widths with random expands in the
min_w epochs, on every `aug_every`-th step; SPOS: one path), then for one (micro-)batch the passes run and their
gradients accumulate in the shared weights: an online teacher's (kd, netaug_kd, netaug_rkd), the base's (its CE
plus lambda x distillation), and each sampled augmented model's alpha x CE, on the batch's leading
`aug_fraction`. Every pass is logged as (sub-network, images, backward?) for the FLOPs count (cost.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from netaug.config import TEACHER_MODES, SpaceConfig
from netaug.losses import kd_kl, rkd_loss

AUG_MODES = ("netaug", "netaug_kd", "netaug_rkd")
SUPERNET = "supernet"


def min_w_start(cfg) -> float:
    """The first min_w epoch is the first at or past this: `min_w_fraction` of the cosine epochs before
    the end (the official `remaining_epochs <= stop_aug_w_epoch`), or of all epochs (`min_w_of: all`)."""
    t, n = cfg.training, cfg.netaug
    if n.min_w_of == "all":
        return t.epochs * (1 - n.min_w_fraction)
    return t.epochs - n.min_w_fraction * (t.epochs - t.warmup_epochs)


class Recipe:
    """The passes of one step of `mode` on `model` (an augmented twin, a supernet, or a plain network)."""

    def __init__(self, model: nn.Module, mode: str, cfg: SpaceConfig, device: torch.device,
                 autocast_dtype: torch.dtype | None = None,
                 arch_log: Callable[[dict], None] | None = None) -> None:
        self.model = model
        self.mode = mode
        self.cfg = cfg
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.arch_log = arch_log
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.training.label_smoothing)
        self.arch_generator = torch.Generator().manual_seed(cfg.training.seed + 1)
        self.pass_log: list[tuple[object, int, bool]] = []  # (sub-network, images, backward?) of each pass run

    @property
    def augmented(self):
        """The model when it has sub-networks (an augmented model or a supernet), else None."""
        from netaug.augment import AugmentedModel

        return self.model if isinstance(self.model, AugmentedModel) else None

    # ------------------------------------------------------------------ which sub-networks
    def aug_kind(self, epoch: int) -> str:
        """"random" sub-networks, or "min_w" (base widths, random expands) in NetAug's final epochs."""
        if self.mode == SUPERNET:
            return "random"
        return "min_w" if epoch >= min_w_start(self.cfg) else "random"

    def step_generator(self, step: int) -> torch.Generator:
        """The generator the sub-networks of `step` are drawn from: seeded by the training seed and the
        step, not the rank, so every data-parallel worker trains the same sub-networks."""
        return self.arch_generator.manual_seed((self.cfg.training.seed + 1) * 1_000_003 + step)

    def alpha(self) -> float:
        return 1.0 if self.mode == SUPERNET else self.cfg.netaug.aug_loss_weight

    def sample(self, step: int, epoch: int) -> list:
        """The augmented sub-networks step `step` of epoch `epoch` trains (each logged to `arch_log`)."""
        if self.mode == SUPERNET:
            samples = 1  # SPOS: one uniformly sampled single path per step, at full weight
        else:
            samples = self.cfg.netaug.aug_samples if self.mode in AUG_MODES else 0
        if samples and step % self.cfg.netaug.aug_every:
            samples = 0  # netaug.aug_every: the augmented loss on every k-th step only
        configs = []
        if samples and self.alpha() > 0:
            kind, generator = self.aug_kind(epoch), self.step_generator(step)
            for sample in range(samples):
                config = self.augmented.normalize(kind, generator)
                if self.arch_log is not None:
                    self.arch_log({"epoch": epoch, "step": step, "sample": sample, "kind": kind, "config": config})
                configs.append(config)
        return configs

    def on_epoch_start(self, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        """Channel sorting at the start of each width-augmented epoch, as the official code (`netaug.sort`;
        the optimizer's momentum follows the channels or stays, `netaug.sort_momentum`)."""
        n = self.cfg.netaug
        if self.augmented is not None and n.sort != "off" and self.aug_kind(epoch) == "random":
            self.augmented.sort_channels(optimizer, n.sort, n.sort_momentum)

    # ------------------------------------------------------------------ the passes
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, float32 logits) of the active network."""
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            features, logits = self.model.forward_with_features(x)
        if self.autocast_dtype is None:
            return features, logits  # float32 (or whatever the model computes in, e.g. float64 checks)
        return features.float(), logits.float()

    def distill_loss(self, features: torch.Tensor, logits: torch.Tensor,
                     teacher: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Hinton KD (kd, netaug_kd) or w_d RKD-D + w_a RKD-A (netaug_rkd) against the detached teacher."""
        t_features, t_logits = teacher
        r = self.cfg.rkd
        if self.mode != "netaug_rkd":
            return kd_kl(logits, t_logits, r.temperature)
        s_emb, t_emb = (features, t_features) if r.embedding == "features" else (logits, t_logits)
        return rkd_loss(s_emb, t_emb, r.distance_weight, r.angle_weight)

    def passes(self, x: torch.Tensor, y: torch.Tensor, configs: list) -> dict[str, torch.Tensor]:
        """Forward and backward passes of one (micro-)batch; their gradients accumulate. Returns the losses
        (unweighted, plus the weighted total) as 0-d tensors on the device."""
        aug = self.augmented
        alpha = self.alpha()
        lam = self.cfg.rkd.lambda_kd
        zero = torch.zeros((), device=self.device)
        teacher_loss = distill = base = aug_total = zero

        teacher = None
        how = self.cfg.rkd.teacher if self.mode in TEACHER_MODES else None
        trained_teacher = how == "max"
        n, y_all = len(x), y
        if how in ("max", "max_fwd"):
            aug.set_active("max")
            with torch.set_grad_enabled(trained_teacher):
                t_features, t_logits = self.forward(x)
                t_loss = self.criterion(t_logits, y)
            if trained_teacher:
                t_loss.backward()
            teacher, teacher_loss = (t_features.detach(), t_logits.detach()), t_loss.detach()
            self.pass_log.append((aug.config("max"), n, trained_teacher))
        if aug is not None:
            aug.set_active("min")
        base_out = None
        if self.mode != SUPERNET or self.cfg.supernet.train_base:
            base_out = self.forward(x)
            self.pass_log.append(("min" if aug is not None else None, n, True))
            if how != "sampled":  # otherwise the base's backward waits for the sampled teacher
                distill, base = self._base_backward(base_out, y, teacher, lam)
        fraction = self.cfg.netaug.aug_fraction
        if configs and fraction < 1:  # netaug.aug_fraction: the augmented passes see the batch's leading part
            keep = min(n, max(2, round(fraction * n)))
            x, y = x[:keep], y[:keep]
        for i, config in enumerate(configs):
            aug.set_active(config)
            a_features, a_logits = self.forward(x)
            self.pass_log.append((config, len(x), True))
            aug_loss = self.criterion(a_logits, y)
            (alpha * aug_loss).backward()
            aug_total = aug_total + aug_loss.detach()
            if how == "sampled" and i == 0:
                teacher, teacher_loss = (a_features.detach(), a_logits.detach()), aug_loss.detach()
        if how == "sampled" and base_out is not None:
            distill, base = self._base_backward(base_out, y_all, teacher, lam)
        lam = lam if teacher is not None else 0.0
        trained = teacher_loss if trained_teacher else zero  # a forward-only or sampled teacher adds no CE of its own
        if aug is not None:
            aug.set_active("min")
        return {"loss": base + alpha * aug_total + lam * distill + trained, "base_loss": base,
                "aug_loss": aug_total, "teacher_loss": teacher_loss, "distill_loss": distill}

    def _base_backward(self, base_out: tuple[torch.Tensor, torch.Tensor], y: torch.Tensor,
                       teacher: tuple[torch.Tensor, torch.Tensor] | None, lam: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Backward of the base's CE (+ lambda x distillation from the detached teacher); returns the
        detached (distillation, CE) losses."""
        features, logits = base_out
        base_loss = self.criterion(logits, y)
        total, distill = base_loss, torch.zeros((), device=self.device)
        if teacher is not None:
            m = len(teacher[1])  # a sampled teacher of netaug.aug_fraction < 1 saw the batch's first m images
            distill_loss = self.distill_loss(features[:m], logits[:m], teacher)
            total = total + lam * distill_loss
            distill = distill_loss.detach()
        total.backward()
        return distill, base_loss.detach()
