"""NetAug in a user's own loop (netaug.NetAug) is the Trainer's recipe: same seed, same batches, same weights."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

from netaug.config import load_space
from netaug.data import load_data
from netaug.train.optim import build_optimizer
from netaug.train.runtime import seed_everything
from netaug.train.trainer import Trainer

MODULE = "spaces/models/resnet8.py:resnet8"
SETS = ["data.resolution=8", "training.batch_size=64", "training.epochs=2", "training.warmup_epochs=0",
        f"model.module={MODULE}", "netaug.r=2", "netaug.s=1", "training.channels_last=false", "netaug.init=augmented"]


def test_a_ten_line_user_loop_gives_the_trainers_weights():
    from netaug import NetAug
    from netaug.models.user import build_user_model

    cfg = load_space("spaces/mbv2.yaml", SETS)
    data = load_data(cfg.data)
    trainer = Trainer(cfg, data)
    batches, lrs = [], []  # what the trainer stepped on, and its learning rates (its schedule) at each step
    steps = 6
    for _ in range(2):  # two epochs of 6 batches each: sorting at the first, min_w at the second
        trainer.recipe.on_epoch_start(trainer.epoch, trainer.optimizer)
        for x, y in list(trainer.batcher.batches(data.train, 64, shuffle=True, augment=True,
                                                 generator=trainer.batch_generator, drop_last=True))[:steps]:
            batches.append((x.clone(), y.clone()))
            lrs.append([g["lr"] for g in trainer.optimizer.param_groups])
            trainer.step(x, y)
        trainer.epoch += 1

    # the user's side: their model, seeded as the trainer seeds, NetAug around it, their optimizer
    seed_everything(cfg.training.seed)
    model, _ = build_user_model(MODULE, {}, data.num_classes, data.in_channels, data.resolution)
    na = NetAug(model, r=2, s=1, example_input=batches[0][0][:1], epochs=2, warmup_epochs=0, seed=0,
                mid_width=cfg.netaug.mid_width)
    optimizer = build_optimizer(na.model, cfg.training)  # the trainer's SGD (no decay on BN and biases)
    for epoch in range(2):
        na.on_epoch_start(epoch, optimizer)
        for (x, y), lr in zip(batches[epoch * steps:(epoch + 1) * steps], lrs[epoch * steps:(epoch + 1) * steps]):
            for group, value in zip(optimizer.param_groups, lr):
                group["lr"] = value
            optimizer.zero_grad()
            na.backward(x, y)
            optimizer.step()
    ours, theirs = na.model.state_dict(), trainer.model.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.allclose(ours[key].float(), theirs[key].float(), atol=1e-6), key


def test_export_is_the_users_class_and_their_object_can_receive_the_weights(tmp_path, monkeypatch):
    from netaug import NetAug

    (tmp_path / "tinynet.py").write_text(
        "import torch.nn as nn\n\n\nclass TinyNet(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.conv, self.bn = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)\n"
        "        self.fc = nn.Linear(8, 10)\n\n    def forward(self, x):\n"
        "        return self.fc(self.bn(self.conv(x)).relu().mean((2, 3)))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tinynet", raising=False)
    tinynet = importlib.import_module("tinynet")
    model = tinynet.TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    na = NetAug(model, r=2, s=1, example_input=x[:1], epochs=1)
    optimizer = torch.optim.SGD(na.parameters(), lr=0.1)
    na.on_epoch_start(0, optimizer)
    for _ in range(3):
        optimizer.zero_grad()
        losses = na.backward(x, y)
        optimizer.step()
    assert losses["aug_loss"] > 0 and losses["base_loss"] > 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the user's object: untouched
    na.prepare_eval([x])
    trained = na.export()
    assert isinstance(trained, tinynet.TinyNet)
    with torch.no_grad():
        assert torch.allclose(trained.eval()(x), na.model(x), atol=1e-6)  # the exported base is the twin's base
    mine = na.export(into=model)
    assert mine is model and torch.equal(model.fc.weight, trained.fc.weight)


def test_bad_keys_are_one_line_naming_the_key():
    from netaug import NetAug
    from netaug.errors import UserError

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    model(torch.zeros(1, 1, 8, 8))
    with pytest.raises(UserError, match="netaug.aug_fraction"):
        NetAug(model, r=2, s=1, example_input=torch.zeros(1, 1, 8, 8), epochs=1, aug_fraction=0)
    with pytest.raises(UserError, match="netaug.bogus"):
        NetAug(model, r=2, s=1, example_input=torch.zeros(1, 1, 8, 8), epochs=1, bogus=1)


def test_the_readme_example_runs_as_written(capsys):
    from conftest import ROOT

    text = (ROOT / "README.md").read_text()
    start = text.index("```python\nimport torch\nfrom netaug import NetAug")
    code = text[start + len("```python\n"):text.index("```", start + 3)]
    exec(compile(code, "README.md", "exec"), {})
    name, loss = capsys.readouterr().out.split()
    assert name == "Sequential" and 0 < float(loss) < 10
