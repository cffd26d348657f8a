"""Deployment facts (BN folding, peak activation) against independent counts, ONNX parity with onnxruntime,
and the pairing of final-stage arms: one seed, one initial base and one batch sequence for every method."""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from netaug.config import load_space
from netaug.data import make_batcher
from netaug.models import build_model
from netaug.train.deploy import check_onnx, deployment_facts, export_onnx
from netaug.train.export import load_exported, save_exported
from netaug.train.trainer import Trainer
from search.final_stage import Arm, arm_space, weights_digest


def _folded_copy(model: nn.Module) -> nn.Module:
    """The model with every ConvBN's BatchNorm folded into its conv by torch's own fusion helper."""
    model = copy.deepcopy(model).eval()
    for m in list(model.modules()):
        if hasattr(m, "conv") and hasattr(m, "bn") and isinstance(m.bn, nn.BatchNorm2d):
            m.conv = fuse_conv_bn_eval(m.conv, m.bn)
            m.bn = nn.Identity()
    return model


def _conv_sizes(spec, resolution: int) -> list[int]:
    """(input + output) elements of every conv and of the classifier, from the spec's arithmetic alone."""
    sizes, r = [], resolution
    out = (r + 2 * 1 - 3) // spec.stem_stride + 1
    sizes.append(spec.in_channels * r * r + spec.stem_ch * out * out)
    r = out
    for b in spec.blocks:
        mid = b.mid_ch if b.mid_ch is not None else b.in_ch
        if b.mid_ch:
            sizes.append(b.in_ch * r * r + mid * r * r)
        out = (r + 2 * (b.kernel // 2) - b.kernel) // b.stride + 1
        sizes.append(mid * r * r + mid * out * out)
        sizes.append(mid * out * out + b.out_ch * out * out)
        r = out
    sizes.append(spec.blocks[-1].out_ch * r * r + spec.feature_ch * r * r)
    sizes.append(spec.feature_ch + spec.num_classes)
    return sizes


@pytest.mark.parametrize("name,resolution,kw", [("mobilenetv2_tiny", 16, {}), ("mobilenetv2", 32, {"width_mult": 0.5}),
                                                 ("proxylessnas_mobile", 24, {"width_mult": 0.35})])
def test_deployment_facts_match_a_folded_model_and_the_specs_arithmetic(name, resolution, kw):
    model = build_model(name, 10, 3, resolution=resolution, **kw).eval()
    facts = deployment_facts(model, (3, resolution, resolution))
    folded = _folded_copy(model)
    n_folded = sum(p.numel() for p in folded.parameters())
    assert facts.params_bn_folded == n_folded and facts.weights_bytes_fp32 == 4 * n_folded
    layers = [m for m in folded.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    weights = sum(m.weight.numel() for m in layers)
    out_channels = sum(m.weight.shape[0] for m in layers)
    assert facts.weights_bytes_int8 == weights + 4 * (n_folded - weights) + 4 * out_channels
    x = torch.randn(2, 3, resolution, resolution)
    assert torch.allclose(folded(x), model(x), atol=1e-4)  # the folding is the real one
    sizes = _conv_sizes(model.spec, resolution)
    assert facts.peak_activation_elements == max(sizes)
    assert facts.peak_activation_bytes_fp32 == 4 * max(sizes) and facts.peak_activation_bytes_int8 == max(sizes)


def test_onnx_export_agrees_with_torch_on_real_images(tmp_path, digits16):
    model = build_model("mobilenetv2_tiny", 10, 1, resolution=16).eval()
    with torch.no_grad():  # non-trivial BN statistics, as after training
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    save_exported(tmp_path / "m.pt", model, digits16)
    loaded, payload = load_exported(tmp_path / "m.pt")
    path = export_onnx(loaded, tmp_path / "m.onnx", (1, 16, 16))
    batcher = make_batcher(digits16, load_space(None).data)
    batches = [x for x, _ in batcher.batches(digits16.test, 100)]  # a last partial batch: the batch axis is dynamic
    check = check_onnx(path, loaded, batches)
    assert check.samples == len(digits16.test)
    # an independent run of the ONNX file
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.cat(batches)
    theirs = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        ours = model(x).numpy()
    assert np.abs(theirs - ours).max() <= 1e-4 and check.max_abs_logit_diff == pytest.approx(
        float(np.abs(theirs - ours).max()), abs=1e-6)
    assert (theirs.argmax(1) == ours.argmax(1)).all() and check.top1_agreement == 1.0


def _first_epoch(cfg, data, largest=None) -> tuple[str, list[bytes]]:
    trainer = Trainer(cfg, data, largest=largest)
    init = weights_digest(trainer.augmented.export("min") if trainer.augmented is not None else trainer.model)
    seen: list[bytes] = []
    trainer.batch_hook = lambda x, y: seen.append(x.numpy().tobytes() + y.numpy().tobytes())
    trainer.train_epoch()
    return init, seen


@pytest.mark.parametrize("init", ["base", "augmented"])
def test_arms_of_one_seed_share_initial_base_weights_and_batches(init):
    """netaug.init=base: every arm starts from the baseline's weights. augmented (the official init):
    the NetAug arms share theirs (slices of one augmented init), the baseline keeps its own."""
    space = load_space(None, ["data.resolution=8", "data.subset=600", "training.batch_size=256",
                              "training.epochs=1", "training.bn_calib_batches=1", f"netaug.init={init}"])
    from netaug.data import load_data

    data = load_data(space.data)
    a_star = [[1.5, 1.0, 2.0, 1.0, 1.5, 1.0, 1.0, 2.0, 1.0], [1.0] * 8 + [2.0] * 9]
    arms = [Arm("baseline", "baseline", "plain"),
            Arm("netaug_fixed", "netaug", "fixed", r=2.0, s=2, aug_loss_weight=1.0),
            Arm("winner", "netaug_rkd", "a*", r=2.0, s=2, aug_loss_weight=0.5, lambda_kd=1.0, largest=a_star)]
    runs = {(arm.name, seed): _first_epoch(arm_space(space, arm, seed), data, arm.largest)
            for arm in arms for seed in (3, 4)}
    for seed in (3, 4):
        inits = {runs[(a.name, seed)][0] for a in arms}
        batches = [runs[(a.name, seed)][1] for a in arms]
        if init == "base":
            assert len(inits) == 1, "every arm of a seed starts from the same base weights"
        else:
            assert runs[("netaug_fixed", seed)][0] == runs[("winner", seed)][0] != runs[("baseline", seed)][0]
        assert len(batches[0]) == len(data.train) // 256 and batches[0] == batches[1] == batches[2]
    assert runs[("baseline", 3)][0] != runs[("baseline", 4)][0]
    assert runs[("baseline", 3)][1] != runs[("baseline", 4)][1]


def test_with_share_then_unshare_only_the_shared_blocks_start_differently():
    from netaug.data import load_data
    from netaug.models.weight_sharing import identical_block_groups, materialize

    space = load_space(None, ["data.resolution=8", "netaug.init=base"])
    data = load_data(space.data)
    plain = Trainer(arm_space(space, Arm("baseline", "baseline", "plain"), 0), data).model
    shared = Trainer(arm_space(space, Arm("netaug_fixed", "netaug", "fixed", r=2.0, s=2, aug_loss_weight=1.0,
                                          share_fraction=0.1), 0), data).augmented.export("min")
    a, b = dict(materialize(plain).named_parameters()), dict(materialize(shared).named_parameters())
    in_groups = {i for group in identical_block_groups(plain.spec) for i in group}
    assert in_groups
    for name, value in a.items():
        block = int(name.split(".")[1]) if name.startswith("blocks.") else None
        if block not in in_groups:
            assert torch.equal(value, b[name]), name  # stem, unshared blocks, head: the same start
    later = {i for group in identical_block_groups(plain.spec) for i in group[1:]}
    assert any(not torch.equal(a[f"blocks.{i}.expand.conv.weight"], b[f"blocks.{i}.expand.conv.weight"])
               for i in later)  # a shared group's later blocks start as its first block
