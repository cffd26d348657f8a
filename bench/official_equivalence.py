"""Side by side with the official NetAug code: the same model, the same step, the same BN recalibration.

    git clone https://github.com/mit-han-lab/tinyml /tmp/tinyml        # MIT licensed; nothing is copied
    python bench/official_equivalence.py --official /tmp/tinyml/netaug

The official MobileNetV2-Tiny NetAug model is imported from that checkout (its torchpack and
torchprofile imports get stand-ins; CUDA calls run on the CPU), built with the official lists,
initialised the official way, and its weights are copied into ours (float64, one thread). Then:

- init: `init: augmented` against the official `init_modules(..., "kaiming_uniform")` from one seed;
- per sub-network (min, max, min_w and random ones drawn from one seeded generator on each side):
  the active channel counts (the draw order), logits, loss, every gradient and the BatchNorm
  running statistics after a training-mode pass;
- channel sorting: every weight and buffer after the official `sort_channels` and ours (`all`);
- NetAug steps through our `Trainer.step` (base + one sampled sub-network, SGD with Nesterov
  momentum and weight decay) against the official `train_one_epoch` body: one step, the sort, a
  second step, with `sort_momentum: stay` (the official behaviour) and `follow` (our default);
- BN recalibration: `recalibrate_bn` against the official `reset_bn` on the same batches;
- MobileNetV3 (width 0.35): parameters of the base and of the augmented twin against the official
  `NetAugMobileNetV3`, and the base's logits, gradients and BN statistics with the official weights.

It prints a table of the largest relative differences (|ours - official| / max |official|).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WIDTHS = [1.0, 1.8, 2.6]  # official aug_width_mult_list (configs/netaug.yaml)
EXPANDS = [1.0, 1.6, 2.2, 2.8]  # official aug_expand_list
HOW_TO_GET = ("error: --official PATH: give the netaug folder of a checkout of the official code "
              "(git clone https://github.com/mit-han-lab/tinyml, then --official tinyml/netaug)")


# ---------------------------------------------------------------------------- the official code
def _stand_ins() -> None:
    """Single-process stand-ins for the official code's torchpack.distributed and torchprofile."""
    dist = types.ModuleType("torchpack.distributed")
    dist.size, dist.rank, dist.local_rank = (lambda: 1), (lambda: 0), (lambda: 0)
    dist.is_master, dist.init = (lambda: True), (lambda: None)
    pack = types.ModuleType("torchpack")
    pack.distributed = dist
    profile = types.ModuleType("torchprofile")

    def profile_macs(*_a, **_k):
        raise NotImplementedError("torchprofile stand-in: MACs are not compared here")

    profile.profile_macs = profile_macs
    sys.modules.setdefault("torchpack", pack)
    sys.modules.setdefault("torchpack.distributed", dist)
    sys.modules.setdefault("torchprofile", profile)


def official_root(path: str | None) -> Path | None:
    """The official netaug folder (given the repository or the folder itself), or None."""
    if not path:
        return None
    root = Path(path).expanduser()
    for candidate in (root, root / "netaug"):
        if (candidate / "models" / "netaug" / "tiny_mbv2.py").is_file() and (candidate / "utils").is_dir():
            return candidate
    return None


def import_official(root: Path):
    """(models, utils, models.netaug.utils) of the official code at `root`."""
    _stand_ins()
    sys.path.insert(0, str(root))
    import models.base as base  # noqa: PLC0415  (the official packages, from `root`)
    import models.netaug as netaug  # noqa: PLC0415
    import models.netaug.utils as netaug_utils  # noqa: PLC0415
    import utils  # noqa: PLC0415

    return types.SimpleNamespace(TinyMobileNetV2=base.TinyMobileNetV2, MobileNetV3=base.MobileNetV3,
                                 NetAugTinyMobileNetV2=netaug.NetAugTinyMobileNetV2,
                                 NetAugMobileNetV3=netaug.NetAugMobileNetV3), utils, netaug_utils


def official_set_active(models, o_aug: nn.Module, kind: str, generator: torch.Generator) -> None:
    """The official `set_active`; its modes have no "max", which is "random" with every draw the largest."""
    if kind != "max":
        o_aug.set_active(kind, generator=generator)
        return
    module = sys.modules[type(o_aug).__mro__[1].__module__]  # models.netaug.mbv2, where set_active lives
    draw = module.torch_random_choices
    module.torch_random_choices = lambda choices, _generator, k=1: max(choices)
    try:
        o_aug.set_active("random")
    finally:
        module.torch_random_choices = draw


# ---------------------------------------------------------------------------- pairing the two models
def layers(model: nn.Module) -> dict[str, list[nn.Module]]:
    """Convs, BatchNorms and linear layers in registration order (the two models register alike)."""
    out: dict[str, list[nn.Module]] = {"conv": [], "bn": [], "linear": []}
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            out["conv"].append(m)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            out["bn"].append(m)
        elif isinstance(m, nn.Linear):
            out["linear"].append(m)
    return out


def pairs(ours: nn.Module, official: nn.Module) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, our tensor, official tensor) for every parameter and BN buffer; shapes must agree."""
    a, b = layers(ours), layers(official)
    out = []
    for kind in a:
        if len(a[kind]) != len(b[kind]):
            raise SystemExit(f"layer count differs: {kind} {len(a[kind])} ours vs {len(b[kind])} official")
        for i, (m, n) in enumerate(zip(a[kind], b[kind])):
            names = ["weight", "bias"] + (["running_mean", "running_var"] if kind == "bn" else [])
            for name in names:
                t, u = getattr(m, name, None), getattr(n, name, None)
                if t is None and u is None:
                    continue
                if t is None or u is None or t.shape != u.shape:
                    raise SystemExit(f"{kind} {i} {name}: shapes differ, {None if t is None else tuple(t.shape)} "
                                     f"ours vs {None if u is None else tuple(u.shape)} official")
                out.append((f"{kind}{i}.{name}", t, u))
    return out


@torch.no_grad()
def copy_official(ours: nn.Module, official: nn.Module) -> None:
    for _, t, u in pairs(ours, official):
        t.copy_(u)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (0 when both vanish)."""
    scale = float(b.detach().abs().max()) if b.numel() else 0.0
    diff = float((a - b).detach().abs().max()) if b.numel() else 0.0
    return diff / scale if scale > 0 else diff


def worst(items) -> tuple[float, str]:
    best = (0.0, "-")
    for name, value in items:
        if value > best[0]:
            best = (value, name)
    return best


def widths_seen(model: nn.Module, x: torch.Tensor, kinds: tuple[type, ...] = (nn.Conv2d,)
                ) -> tuple[list[int], torch.Tensor]:
    """(output channels of every layer of `kinds` in execution order, the output) of `model(x)`."""
    seen: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: seen.append(int(o.shape[1])))
             for m in model.modules() if isinstance(m, kinds)]
    try:
        out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen, out


# ---------------------------------------------------------------------------- MobileNetV3
def mbv3_pairs(ours: nn.Module, official: nn.Module) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, our tensor, the official tensor) for every MobileNetV3 parameter and BN buffer, layer by
    layer (the SE layer registers after the point conv there and before the projection here, so
    registration order does not pair them). The official head layer is a 1x1 conv, ours a linear layer."""
    ours = ours.base.net if hasattr(ours, "base") else ours  # an augmented model: its network
    out: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    def conv_bn(name: str, dst, layer) -> None:
        out.append((f"{name}.conv.weight", dst.conv.weight, layer.conv.weight))
        out.extend((f"{name}.bn.{k}", getattr(dst.bn, k), getattr(layer.norm, k))
                   for k in ("weight", "bias", "running_mean", "running_var"))

    stem, first = official.backbone["input_stem"].op_list
    conv_bn("stem", ours.stem, stem)
    conv_bn("blocks.0.depthwise", ours.blocks[0].depthwise, first.conv.depth_conv)
    conv_bn("blocks.0.project", ours.blocks[0].project, first.conv.point_conv)
    blocks = [b.conv for stage in official.backbone["stages"] for b in stage.op_list]
    for i, (mine, theirs) in enumerate(zip(ours.blocks[1:], blocks, strict=True), start=1):
        conv_bn(f"blocks.{i}.expand", mine.expand, theirs.inverted_conv)
        conv_bn(f"blocks.{i}.depthwise", mine.depthwise, theirs.depth_conv)
        conv_bn(f"blocks.{i}.project", mine.project, theirs.point_conv)
        if mine.se is not None:
            for part, a, b in (("reduce", mine.se.reduce, theirs.se_layer.reduce_conv),
                               ("expand", mine.se.expand, theirs.se_layer.expand_conv)):
                out += [(f"blocks.{i}.se.{part}.weight", a.weight, b.weight),
                        (f"blocks.{i}.se.{part}.bias", a.bias, b.bias)]
    feature, _, head, classifier = official.head.op_list
    conv_bn("feature_mix", ours.feature_mix, feature)
    out += [("head.0.weight", ours.head[0].weight, head.conv.weight),
            ("head.0.bias", ours.head[0].bias, head.conv.bias),
            ("classifier.weight", ours.classifier.weight, classifier.linear.weight),
            ("classifier.bias", ours.classifier.bias, classifier.linear.bias)]
    return out


def mbv3_rows(models, args) -> list[tuple[str, str, float | None]]:
    """MobileNetV3 (width 0.35): sizes of base and augmented twin, and the base's logits, gradients and
    BN statistics with the official weights copied in."""
    from netaug.augment import augment
    from netaug.models import build_model, count_params

    official = models.MobileNetV3(width_mult=0.35, n_classes=args.classes)
    with torch.no_grad():  # non-trivial BN statistics and biases, so that a mis-paired tensor shows
        for p in official.parameters():
            p.normal_(0, 0.1)
        for m in official.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ours = build_model("mobilenetv3", args.classes, 3, resolution=args.res, width_mult=0.35)
    o_aug = models.NetAugMobileNetV3(official, EXPANDS, [1.0, 2.0, 3.0], args.classes)
    aug = augment(ours, [1.0, 2.0, 3.0], EXPANDS)
    count = count_params
    rows = [("MobileNetV3 0.35: parameters", f"base {count(ours):,} ours vs {count(official):,} official; augmented "
             f"(widths [1, 2, 3]) {count(aug):,} vs {count(o_aug):,}",
             float(count(ours) != count(official) or count(aug) != count(o_aug)))]
    pairs_ = mbv3_pairs(ours, official)
    if len({id(t) for _, t, _ in pairs_}) != len(list(ours.parameters())) + 2 * len(layers(ours)["bn"]):
        raise SystemExit("MobileNetV3: not every parameter and BN buffer is paired")
    with torch.no_grad():
        for _, t, u in pairs_:
            t.copy_(u.reshape(t.shape))
    x = torch.randn(args.batch, 3, args.res, args.res, generator=torch.Generator().manual_seed(args.seed + 1))
    ours.eval(), official.eval()
    rows.append(("MobileNetV3 0.35: logits (eval)", "official weights copied", rel(ours(x), official(x))))
    ours.train(), official.train()
    a, b = ours(x), official(x)
    a.square().mean().backward()
    b.square().mean().backward()
    rows.append(("MobileNetV3 0.35: logits (train)", "batch statistics", rel(a, b)))
    # relative to the largest official gradient: some are 0 up to rounding (a BN bias whose shift the next
    # BN removes in training mode), and a per-tensor ratio of two rounding errors says nothing
    scale = max(float(u.grad.abs().max()) for _, t, u in pairs_ if t.grad is not None)
    grads = [(name, float((t.grad - u.grad.reshape(t.shape)).abs().max()) / scale)
             for name, t, u in pairs_ if t.grad is not None]
    rows.append(("MobileNetV3 0.35: gradients", f"{len(grads)} parameters, max |diff| / max |official gradient|",
                 worst(grads)[0]))
    stats = [(name, rel(t, u)) for name, t, u in pairs_ if "running" in name]
    rows.append(("MobileNetV3 0.35: BN running stats", "after the training-mode pass", worst(stats)[0]))
    return rows


def mbv3_draw_rows(models, args) -> list[tuple[str, str, float | None]]:
    """MobileNetV3 0.35 augmented (widths [1, 2, 3], the official expands), official weights copied:
    `args.mbv3_draws` random sub-networks drawn from one seeded generator on each side (every conv and
    linear width, SE squeezes included), then logits, gradients and BN statistics of the first few."""
    from netaug.augment import augment
    from netaug.models import build_model

    official = models.MobileNetV3(width_mult=0.35, n_classes=args.classes)
    o_aug = models.NetAugMobileNetV3(official, EXPANDS, [1.0, 2.0, 3.0], args.classes)
    aug = augment(build_model("mobilenetv3", args.classes, 3, resolution=args.res, width_mult=0.35),
                  [1.0, 2.0, 3.0], EXPANDS)
    with torch.no_grad():
        for q in o_aug.parameters():
            q.normal_(0, 0.1)
        for m in o_aug.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    pairs_ = mbv3_pairs(aug, o_aug)

    def copy() -> None:
        with torch.no_grad():
            for _, t, u in pairs_:
                t.copy_(u.reshape(t.shape))

    gen = torch.Generator().manual_seed(args.seed + 5)
    x = torch.randn(2, 3, args.res, args.res, generator=gen)
    y = torch.randint(0, args.classes, (2,), generator=gen)
    g_ours, g_off = torch.Generator().manual_seed(args.seed + 6), torch.Generator().manual_seed(args.seed + 6)
    agree, se_layers, se_agree, logits, grads, stats = 0, 0, 0, [], [], []
    ce = nn.CrossEntropyLoss()
    aug.eval(), o_aug.eval()
    for i in range(args.mbv3_draws):
        config = aug.set_active("random", g_ours)
        official_set_active(models, o_aug, "random", g_off)
        full = i < args.mbv3_checked  # logits, gradients and BN statistics of the first few
        if full:
            copy()
            aug.train(), o_aug.train()
            aug.zero_grad(set_to_none=True), o_aug.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(full):
            # MobileNetV3's head layer is a linear layer here and a 1x1 conv there: count both kinds
            w_ours, out = widths_seen(aug, x, (nn.Conv2d, nn.Linear))
            w_off, o_out = widths_seen(o_aug, x, (nn.Conv2d, nn.Linear))
        agree += w_ours == w_off
        ours_se = [b.se_ch for b in aug.export(config).spec.blocks if b.se_ch is not None]
        off_se = [blk.conv.se_layer.active_mid_channels for stage in o_aug.backbone["stages"] for blk in stage.op_list
                  if hasattr(blk.conv, "se_layer")]
        se_layers += len(off_se)
        se_agree += sum(a == b for a, b in zip(ours_se, off_se)) if len(ours_se) == len(off_se) else 0
        if full:
            ce(out, y).backward(), ce(o_out, y).backward()
            logits.append(rel(out, o_out))
            scale = max(float(u.grad.abs().max()) for _, t, u in pairs_ if u.grad is not None)
            grads.append(max(float(((t.grad if t.grad is not None else torch.zeros_like(t))
                                    - (u.grad if u.grad is not None else torch.zeros_like(u)).reshape(t.shape))
                                   .abs().max()) / scale for _, t, u in pairs_ if "running" not in _))
            stats.append(max(rel(t, u.reshape(t.shape)) for name, t, u in pairs_ if "running" in name))
            aug.eval(), o_aug.eval()
    n = args.mbv3_checked
    return [
        (f"MobileNetV3 0.35: {args.mbv3_draws} drawn sub-networks: widths", f"{agree}/{args.mbv3_draws} sub-networks "
         f"with every conv and linear width equal; SE squeezes {se_agree}/{se_layers}",
         float(agree != args.mbv3_draws)),
        ("MobileNetV3 0.35: drawn sub-networks: logits (train)", f"the first {n}, official weights copied",
         max(logits, default=0.0)),
        ("MobileNetV3 0.35: drawn sub-networks: gradients", f"the first {n}, max |diff| / max |official gradient|",
         max(grads, default=0.0)),
        ("MobileNetV3 0.35: drawn sub-networks: BN running stats", f"the first {n}", max(stats, default=0.0)),
    ]


def mbv3_init_rows(models, outils, args) -> list[tuple[str, str, float | None]]:
    """MobileNetV3 0.35 init on each side, module by module from one seed per module (the two register
    their SE layers in different orders, so one seed for the whole model would pair different draws):
    the base (official he_fout vs our fan_out) and the augmented twin (official kaiming_uniform vs our
    `init: augmented`), every parameter, and the post-pool head layer's max |w| x sqrt(fan_in) (a
    linear layer here, a 1x1 conv there)."""
    from netaug.augment import augment
    from netaug.models import build_model
    from netaug.models.network import head_layers, init_module

    rows = []
    official = models.MobileNetV3(width_mult=0.35, n_classes=args.classes)
    ours = build_model("mobilenetv3", args.classes, 3, resolution=args.res, width_mult=0.35)
    for label, o_model, model, o_init, init in (
            ("base (he_fout / fan_out)", official, ours, "he_fout", "fan_out"),
            ("augmented (kaiming_uniform / augmented)",
             models.NetAugMobileNetV3(official, EXPANDS, [1.0, 2.0, 3.0], args.classes),
             augment(ours, [1.0, 2.0, 3.0], EXPANDS), "kaiming_uniform", "uniform")):
        pairs_ = [(n, t, u) for n, t, u in mbv3_pairs(model, o_model) if "running" not in n]
        owner = {id(q): m for m in model.modules() for q in m.parameters(recurse=False)}
        o_owner = {id(q): m for m in o_model.modules() for q in m.parameters(recurse=False)}
        modules = list(dict.fromkeys((owner[id(t)], o_owner[id(u)]) for _, t, u in pairs_))
        heads = head_layers(model.base.net if hasattr(model, "base") else model)  # an augmented model's network
        for k, (m, o_m) in enumerate(modules):
            torch.manual_seed(args.seed + 7 + k)
            outils.init_modules(o_m, init_type=o_init)  # that module and what it holds
            torch.manual_seed(args.seed + 7 + k)
            init_module(m, init, as_conv=m in heads)
        head = next((t.detach(), u.detach().reshape(t.shape)) for n, t, u in pairs_ if n == "head.0.weight")
        scale = " vs ".join(f"{float(w.abs().max()) * w.shape[1] ** 0.5:.3f}" for w in head)
        rows.append((f"MobileNetV3 0.35: init, {label}", f"{len(modules)} layers, every parameter; head layer max "
                     f"|w| sqrt(fan_in) {scale} (ours vs official)",
                     worst((n, rel(t, u.reshape(t.shape))) for n, t, u in pairs_)[0]))
    return rows


def schedule_rows(root: Path) -> list[tuple[str, str, float | None]]:
    """The learning rate of every step (the official CosineLRwithWarmup, imported, at 1 and 16 workers)
    and the epochs in min_w mode (the official train.py rule) on the official 5 + 150-epoch schedule."""
    import importlib.util

    from netaug.config import load_space
    from netaug.train.optim import build_scheduler
    from netaug.train.trainer import min_w_start

    spec = importlib.util.spec_from_file_location("official_lr", root / "utils" / "lr_scheduler.py")
    official_lr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official_lr)
    cfg = load_space(str(Path(__file__).resolve().parents[1] / "spaces" / "netaug-official.yaml"), [])
    t = cfg.training
    steps_per_epoch = 10  # any; the schedules are per step
    rows = []
    for workers in (1, 16):
        lrs = []
        for which in ("ours", "official"):
            param = nn.Parameter(torch.zeros(1))
            opt = torch.optim.SGD([param], lr=t.lr * workers)
            if which == "ours":
                sched = build_scheduler(opt, dataclasses.replace(t, lr=t.lr * workers), steps_per_epoch, workers)
            else:
                sched = official_lr.CosineLRwithWarmup(opt, int(t.warmup_epochs * steps_per_epoch), t.lr,
                                                       (t.epochs - int(t.warmup_epochs)) * steps_per_epoch)
            seen = []
            for _ in range(t.epochs * steps_per_epoch):
                seen.append(opt.param_groups[0]["lr"])
                opt.step()
                sched.step()
            lrs.append(torch.tensor(seen))
        rows.append((f"LR schedule, {workers} worker(s): every step", f"first step {lrs[0][0]:.4g} ours vs "
                     f"{lrs[1][0]:.4g} official (peak {t.lr * workers:.4g}), {len(lrs[0])} steps",
                     rel(lrs[0], lrs[1])))
    stop = cfg.netaug.min_w_fraction * (t.epochs - t.warmup_epochs)  # the official stop_aug_w_epoch: 75
    ours = [e >= min_w_start(cfg) for e in range(t.epochs)]
    official = [t.epochs - e <= stop for e in range(t.epochs)]
    differ = sum(a != b for a, b in zip(ours, official))
    rows.append(("min_w epochs on the official 155-epoch schedule", f"{sum(ours)} ours vs {sum(official)} official "
                 f"(stop_aug_w_epoch {stop:g}); epochs that differ: {differ}", float(differ)))
    return rows


# ---------------------------------------------------------------------------- the checks
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--official", help="netaug folder of a checkout of mit-han-lab/tinyml (or the repository)")
    p.add_argument("--res", type=int, default=96, help="input side (> 64: the official stride-2 layout)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--random", type=int, default=6, help="random sub-networks compared")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mbv3-draws", type=int, default=300,
                   help="random MobileNetV3 sub-networks whose widths are compared")
    p.add_argument("--mbv3-checked", type=int, default=4,
                   help="of those, the first N also compared in logits, gradients and BN statistics")
    p.add_argument("--tolerance", type=float, default=1e-9, help="largest relative difference called equal")
    args = p.parse_args(argv)
    root = official_root(args.official)
    if root is None:
        print(HOW_TO_GET if not args.official else
              f"error: --official {args.official}: no official netaug code there (models/netaug/tiny_mbv2.py); "
              + HOW_TO_GET.split(": ", 2)[2], file=sys.stderr)
        sys.exit(2)
    if args.res <= 64:
        print("error: --res must be above 64 (at 64 px or less our models switch to the small-input layout)",
              file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    models, outils, nutils = import_official(root)

    from netaug.augment import augment, recalibrate_bn
    from netaug.config import load_space
    from netaug.data import DataSplits, ImageSet
    from netaug.models import build_model
    from netaug.models.network import init_weights
    from netaug.train.trainer import Trainer

    rows: list[tuple[str, str, float | None]] = []  # (check, detail, relative difference or None for info)
    torch.manual_seed(args.seed)
    o_base = models.TinyMobileNetV2(n_classes=args.classes)
    o_aug = models.NetAugTinyMobileNetV2(o_base, EXPANDS, WIDTHS, args.classes).double()
    base = build_model("mobilenetv2_tiny", args.classes, 3, resolution=args.res)
    aug = augment(base, WIDTHS, EXPANDS, mid_width="input", init="augmented").double()
    count = lambda m: sum(t.numel() for t in m.parameters())  # noqa: E731
    same_counts = count(aug) == count(o_aug) and count(base) == count(o_base)
    rows.append(("parameters", f"augmented {count(aug):,} ours vs {count(o_aug):,} official; base "
                 f"{count(base):,} vs {count(o_base):,}", 0.0 if same_counts else 1.0))

    # init: both reseeded, then each side's init of the whole augmented model
    torch.manual_seed(args.seed + 1)
    outils.init_modules(o_aug, init_type="kaiming_uniform")
    torch.manual_seed(args.seed + 1)
    init_weights(aug, "uniform")
    rows.append(("init: augmented vs official kaiming_uniform", "every parameter",
                 worst((n, rel(t, u)) for n, t, u in pairs(aug, o_aug) if "running" not in n)[0]))
    with torch.no_grad():  # non-trivial BN parameters and statistics for the checks below
        for m in o_aug.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    copy_official(aug, o_aug)

    gen = torch.Generator().manual_seed(args.seed + 2)
    x = torch.randn(args.batch, 3, args.res, args.res, generator=gen)
    y = torch.randint(0, args.classes, (args.batch,), generator=gen)
    o_ce = outils.CrossEntropyWithLabelSmooth(smooth_ratio=0.1)
    ce = nn.CrossEntropyLoss(label_smoothing=0.1)

    # per sub-network: the draws (channel counts), logits, loss, gradients, BN statistics
    kinds = ["min", "max", "min_w"] + ["random"] * args.random
    g_ours, g_off = torch.Generator().manual_seed(args.seed + 3), torch.Generator().manual_seed(args.seed + 3)
    channel_counts, channel_total = 0, 0
    for i, kind in enumerate(kinds):
        copy_official(aug, o_aug)  # the same starting state for each sub-network
        aug.train(), o_aug.train()
        aug.zero_grad(set_to_none=True), o_aug.zero_grad(set_to_none=True)
        aug.set_active(kind, g_ours if kind in ("random", "min_w") else None)
        official_set_active(models, o_aug, kind, g_off)
        out: dict[str, torch.Tensor] = {}
        w_ours, out["ours"] = widths_seen(aug, x)
        w_off, out["official"] = widths_seen(o_aug, x)
        channel_total += len(w_off)
        channel_counts += sum(a == b for a, b in zip(w_ours, w_off)) if len(w_ours) == len(w_off) else 0
        loss, o_loss = ce(out["ours"], y), o_ce(out["official"], y)
        loss.backward(), o_loss.backward()
        label = f"{kind} #{i - 2}" if kind == "random" else kind
        rows.append((f"sub-network {label}: channels", f"{sum(a == b for a, b in zip(w_ours, w_off))}/{len(w_off)} "
                     "conv widths agree", float(w_ours != w_off)))
        rows.append((f"sub-network {label}: logits, loss", f"loss {loss.item():.6f}",
                     max(rel(out["ours"], out["official"]), abs((loss - o_loss).item()) / abs(o_loss.item()))))
        grads = [(n, rel(t.grad if t.grad is not None else torch.zeros_like(t),
                         u.grad if u.grad is not None else torch.zeros_like(u)))
                 for n, t, u in pairs(aug, o_aug) if "running" not in n]
        rows.append((f"sub-network {label}: gradients", "every parameter", worst(grads)[0]))
        rows.append((f"sub-network {label}: BN running stats", "after one training-mode pass",
                     worst((n, rel(t, u)) for n, t, u in pairs(aug, o_aug) if "running" in n)[0]))

    # sorting
    copy_official(aug, o_aug)
    with torch.no_grad():
        o_aug.sort_channels()
    aug.sort_channels(None, scope="all")
    rows.append(("channel sorting (all)", "every weight and BN buffer",
                 worst((n, rel(t, u)) for n, t, u in pairs(aug, o_aug))[0]))

    # NetAug steps through our Trainer against the official step
    n_img = args.batch * 2
    images = ImageSet(torch.randint(0, 256, (n_img, 3, args.res, args.res), dtype=torch.uint8, generator=gen),
                      torch.randint(0, args.classes, (n_img,), generator=gen))
    data = DataSplits("random", images, images, images, args.classes, (0.5,) * 3, (0.25,) * 3, False)
    for momentum in ("stay", "follow"):
        cfg = load_space(str(Path(__file__).resolve().parents[1] / "spaces" / "netaug-official.yaml"),
                         ["data.name=digits", f"data.resolution={args.res}", f"training.batch_size={args.batch}",
                          "training.channels_last=false", "training.warmup_epochs=0", "training.epochs=4",
                          f"netaug.sort_momentum={momentum}"])
        trainer = Trainer(cfg, data, mode="netaug")
        model = trainer.model.double()
        torch.manual_seed(args.seed + 1)
        outils.init_modules(o_aug, init_type="kaiming_uniform")
        copy_official(model, o_aug)
        decay = [q for n, q in o_aug.named_parameters() if not any(k in n for k in ("bias", "norm"))]
        no_decay = [q for n, q in o_aug.named_parameters() if any(k in n for k in ("bias", "norm"))]
        o_opt = torch.optim.SGD([{"params": no_decay, "weight_decay": 0},
                                 {"params": decay, "weight_decay": cfg.training.weight_decay}],
                                lr=cfg.training.lr, momentum=0.9, nesterov=True)
        drawn_equal = True
        start = {n: u.detach().clone() for n, _, u in pairs(model, o_aug)}
        for step in range(2):
            if step == 1:  # the official code sorts at the start of a width-augmented epoch
                with torch.no_grad():
                    o_aug.sort_channels()
                model.sort_channels(trainer.optimizer, cfg.netaug.sort, cfg.netaug.sort_momentum)
            g = torch.Generator()
            g.set_state(trainer.step_generator(trainer.global_step).get_state())
            for group in o_opt.param_groups:
                group["lr"] = trainer.optimizer.param_groups[0]["lr"]
            # the official train_one_epoch body (netaug_mode "default")
            o_aug.train()
            o_opt.zero_grad()
            o_aug.set_active(mode="min")
            o_ce(o_aug(x), y).backward()
            o_aug.set_active(mode="random", generator=g)
            o_widths, o_out = widths_seen(o_aug, x)
            o_ce(o_out, y).backward()
            o_opt.step()
            config = model.config("random", trainer.step_generator(trainer.global_step))
            model.set_active(config)
            model.eval()  # no BatchNorm statistics updated by this look at the widths
            with torch.no_grad():
                ours_widths = widths_seen(model, x)[0]
            model.set_active("min")
            drawn_equal &= ours_widths == o_widths
            trainer.step(x, y)
        label = "stay (official)" if momentum == "stay" else "follow (our default)"
        for what, keep in (("weights", lambda n: "running" not in n), ("BN running stats", lambda n: "running" in n)):
            # sorting moves whole channels, so "the update" is against the sorted starting point: the
            # official weights after step 2 minus those before it would mix the permutation in; the
            # largest change of any entry over both steps bounds it from above
            change = max(float((u - start[n]).abs().max()) for n, _, u in pairs(model, o_aug) if keep(n))
            diff = worst((n, float((t - u).abs().max())) for n, t, u in pairs(model, o_aug) if keep(n))
            rows.append((f"2 NetAug steps + sort between, momentum {label}: {what}",
                         f"max |ours - official| / max |change| over the 2 steps; worst {diff[1]}; same sub-networks "
                         f"drawn: {'yes' if drawn_equal else 'NO'}", diff[0] / change))

    # BN recalibration of the base on the same batches
    copy_official(aug, o_aug)
    batches = [torch.randn(args.batch, 3, args.res, args.res, generator=gen) for _ in range(3)]
    aug.set_active("min"), o_aug.set_active("min")
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # the official reset_bn moves batches to CUDA
    try:
        nutils.reset_bn(o_aug, [(b, None) for b in batches], sync=False)
    finally:
        torch.Tensor.cuda = cuda
    recalibrate_bn(aug, batches)
    rows.append(("BN recalibration (base) vs official reset_bn", "running mean and var, every BN",
                 worst((n, rel(t, u)) for n, t, u in pairs(aug, o_aug) if "running" in n)[0]))

    rows += mbv3_rows(models, args)
    rows += mbv3_draw_rows(models, args)
    rows += mbv3_init_rows(models, outils, args)
    rows += schedule_rows(root)

    print(f"official code: {root}; MobileNetV2-Tiny, widths {WIDTHS}, expands {EXPANDS}, {args.res} px, batch "
          f"{args.batch}, float64, 1 thread, torch {torch.__version__}; tolerance {args.tolerance:g} relative")
    print(f"draws: {channel_counts}/{channel_total} conv widths agree over {len(kinds)} sub-networks")
    print(f"| {'check':<66} | {'max rel. difference':>19} | {'':<5} | detail |")
    print(f"| {'-' * 66} | {'-' * 19} | {'-' * 5} | --- |")
    failed = 0
    for check, detail, value in rows:
        momentum_row = "follow" in check
        ok = value is not None and value <= args.tolerance
        failed += not ok and not momentum_row
        verdict = "same" if ok else ("diff" if not momentum_row else "moved")
        print(f"| {check:<66} | {value:19.3e} | {verdict:<5} | {detail} |")
    print("'moved': our default sort_momentum follow permutes the momentum with its channels, the official code "
          "does not (docs/architecture.md)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
