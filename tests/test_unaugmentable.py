"""Models the channel graph cannot augment, and data no trial could read, stop both CLIs with one line naming the
layer (or path) and exit 2, before Ray starts; search/run.py writes nothing."""

from __future__ import annotations

import importlib.util
import textwrap

import pytest
from conftest import ROOT, SPACE

spec = importlib.util.spec_from_file_location("search_run", ROOT / "search" / "run.py")
run_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_module)

# A small residual CNN with one odd layer (`odd`, built from the expression) placed before the classifier, inside
# the residual branch, or between two convs. `tuple` layers return (output, state), as recurrent and attention
# layers do; the forward takes what such a layer gives.
MODELS = textwrap.dedent('''
    import torch
    import torch.nn as nn


    class Odd(nn.Module):
        def __init__(self, layer, where, tuple_out):
            super().__init__()
            self.where, self.tuple_out = where, tuple_out
            self.c1, self.b1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.c3, self.b3 = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)
            self.odd = layer
            self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 10)

        def apply_odd(self, x):
            if not self.tuple_out:
                return self.odd(x)
            out, _ = self.odd(x.unsqueeze(1))
            return out[:, -1]

        def forward(self, x):
            x = torch.relu(self.b1(self.c1(x)))
            if self.where == "between":
                x = self.odd(x)
            y = self.b2(self.c2(x))
            if self.where == "residual":
                y = self.odd(y)
            x = torch.relu(self.b3(self.c3(torch.relu(x + y))))
            x = self.pool(x).flatten(1)
            if self.where == "classifier":
                x = self.apply_odd(x)
            return self.fc(x)


    LAYERS = {
        "local_response_norm": (lambda: nn.LocalResponseNorm(2), False),
        "instance_norm": (lambda: nn.InstanceNorm2d(8, affine=True), False),
        "softmax2d": (lambda: nn.Softmax2d(), False),
        "layer_norm": (lambda: nn.LayerNorm(8), False),
        "lstm": (lambda: nn.LSTM(8, 8, batch_first=True), True),
        "gru": (lambda: nn.GRU(8, 8, batch_first=True), True),
    }


    def odd(layer="lstm", where="classifier", num_classes=10, in_channels=1):
        make, tuple_out = LAYERS[layer]
        return Odd(make(), where, tuple_out)
''')
CASES = [("local_response_norm", "between"), ("local_response_norm", "residual"), ("instance_norm", "between"),
         ("instance_norm", "residual"), ("softmax2d", "residual"), ("layer_norm", "classifier"),
         ("lstm", "classifier"), ("gru", "classifier")]
TINY = ["data.resolution=8", "training.epochs=1", "training.batch_size=128"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "odd_models.py"
    path.write_text(MODELS)
    return path


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("layer,where", CASES)
def test_a_layer_the_graph_does_not_know_is_one_line_from_both_clis(tmp_path, capsys, models, layer, where):
    from netaug.train.__main__ import main as train_main

    sets = [*TINY, f"model.module={models}:odd", f"model.kwargs={{layer: {layer}, where: {where}}}"]
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        run_module.main(["--space", str(SPACE), "--out", str(out), "--no-dashboard",
                         *[a for s in sets for a in ("--set", s)]])
    line = one_error_line(capsys.readouterr().err)
    assert exc.value.code == 2 and line.startswith("error: model.module: layer ") and "cannot be augmented" in line
    assert not out.exists()  # nothing written, Ray never started
    expected = line
    train_out = tmp_path / "train"
    with pytest.raises(SystemExit) as exc:
        train_main(["--space", str(SPACE), "--out", str(train_out), "--no-progress",
                    *[a for s in sets for a in ("--set", s)]])
    assert exc.value.code == 2 and one_error_line(capsys.readouterr().err) == expected


def test_freezing_the_named_layers_makes_the_tuple_layer_model_augment(models):
    """The line's hint is right: freeze what it names and the recurrent head trains with NetAug."""
    from netaug.augment import augment_module
    from netaug.models.user import build_user_model

    module, _ = build_user_model(f"{models}:odd", {"layer": "lstm", "where": "classifier"}, 10, 1, 8)
    import torch

    twin = augment_module(module, [1.0, 2.0], [1.0, 2.0], torch.zeros(1, 1, 8, 8), freeze=["c3"])
    twin.set_active("max")
    assert twin(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_an_image_folder_with_empty_class_folders_is_one_line_and_nothing_is_written(tmp_path, capsys):
    root = tmp_path / "images"
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        run_module.main(["--space", str(SPACE), "--out", str(out), "--no-dashboard", "--set", "data.name=imagefolder",
                         "--set", f"data.root={root}"])
    line = one_error_line(capsys.readouterr().err)
    assert exc.value.code == 2 and line == f"error: data.root: {root / 'train'} holds no .png or .jpg images"
    assert not out.exists()


USER_NET = textwrap.dedent('''
    import torch.nn as nn


    class UserNet(nn.Module):
        def __init__(self, num_classes=10, in_channels=1):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, num_classes)

        def forward(self, x):
            return self.fc(self.pool(self.bn(self.conv(x)).relu()).flatten(1))
''')


@pytest.mark.parametrize("import_first", [True, False])
def test_a_users_file_factory_builds_their_own_class(tmp_path, monkeypatch, import_first):
    """`model.module: path/to/usernet.py:UserNet` gives instances of the class the user's `import usernet` knows,
    whether they imported it before or after (it was rebuilt under a generated module name before)."""
    import sys

    name = f"usernet_{'a' if import_first else 'b'}"
    (tmp_path / f"{name}.py").write_text(USER_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    from netaug.models.user import load_factory

    theirs = importlib.import_module(name) if import_first else None
    model = load_factory(f"{tmp_path / name}.py:UserNet")()
    theirs = theirs or importlib.import_module(name)
    assert isinstance(model, theirs.UserNet) and type(model).__module__ == name


def test_describe_names_each_groups_writers_and_readers():
    import torch

    from netaug.augment import augment_module
    from netaug.models.user import build_user_model

    model, _ = build_user_model("spaces/models/resnet8.py:resnet8", {}, 10, 1, 16)
    twin = augment_module(model, [1, 2], [1, 2], torch.zeros(1, 1, 16, 16))
    lines = twin.describe().splitlines()
    assert lines[0] == "fixed (never widened): the input, written by fc; read by stem.0"
    convs = {n: m for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    assert len(lines) == 1 + twin.num_width_groups + twin.num_expand_groups
    for line in lines[1:]:
        head, written, read = line.split("; ")
        writers = written.removeprefix("written by ").split(", ")
        base = int(head.split(": ")[1].split()[0])
        assert all(convs[w].out_channels == base for w in writers)  # every writer writes the group's channels
        readers = read.removeprefix("read by ").split(", ")
        assert all(getattr(convs[r], "in_channels", getattr(convs[r], "in_features", None)) == base for r in readers)


def test_a_registered_channelwise_layer_is_widened_through(tmp_path):
    import torch
    import torch.nn as nn

    from netaug.augment import augment_module
    from netaug.augment.graph import REGISTERED_MODULES, register_channelwise

    class ErfGate(nn.Module):  # channel-wise, but through a function the graph does not know
        def forward(self, x):
            return x * torch.special.erf(x)

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), ErfGate(), nn.Conv2d(8, 8, 3, padding=1),
                             nn.BatchNorm2d(8), ErfGate(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    x = torch.randn(4, 1, 8, 8)
    # unknown, the gate's output is fixed, and multiplying it with its input freezes the channels it gates
    assert augment_module(net(), [1, 2], [1, 2], x[:1]).num_width_groups == 0
    register_channelwise(ErfGate)
    try:
        model = net().eval()
        twin = augment_module(model, [1, 2], [1, 2], x[:1], init="base").eval()
        assert twin.num_width_groups == 2
        with torch.no_grad():
            assert torch.equal(twin(x), model(x))  # the base sub-network computes the user's model exactly
            twin.set_active("max")
            assert twin(x).shape == (4, 10)
    finally:
        REGISTERED_MODULES.discard(ErfGate)
