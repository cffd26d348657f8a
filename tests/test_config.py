"""The space-file schema: defaults, overrides, and one-line exit-2 errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from netaug.config import SpaceConfig, describe_schema, load_space, resume_conflicts
from netaug.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_space_loads_and_overrides_apply():
    cfg = load_space(ROOT / "spaces" / "mbv2.yaml", ["training.epochs=3", "netaug.r=2.5", "data.subset=100"])
    assert isinstance(cfg, SpaceConfig)
    assert cfg.training.epochs == 3 and cfg.netaug.r == 2.5 and cfg.data.subset == 100
    assert cfg.data.name == "digits" and cfg.model.name == "mobilenetv2_tiny"


def test_int_widens_to_float_and_fashion_mnist_gets_default_root(tmp_path):
    cfg = load_space(None, ["netaug.r=2"])
    assert cfg.netaug.r == 2.0 and isinstance(cfg.netaug.r, float)
    if Path("/usr/share/datasets/fashion-mnist").is_dir():
        assert load_space(None, ["data.name=fashion-mnist"]).data.root == "/usr/share/datasets/fashion-mnist"


def test_schema_description_covers_every_leaf():
    keys = {row[0] for row in describe_schema()}
    assert {"data.name", "model.name", "training.lr", "netaug.r", "netaug.s"} <= keys
    assert all(row[3] for row in describe_schema()), "every key needs a doc string"


BAD = [
    ({"data": {"nmae": "digits"}}, "data.nmae"),
    ({"dataa": {}}, "dataa"),
    ({"data": {"name": "mnist-typo"}}, "data.name"),
    ({"data": {"resolution": "big"}}, "data.resolution"),
    ({"data": {"resolution": 4}}, "data.resolution"),
    ({"data": {"val_fraction": 1.5}}, "data.val_fraction"),
    ({"data": {"val_fraction": 0.5, "test_fraction": 0.6}}, "data.val_fraction"),
    ({"data": {"name": "idx"}}, "data.root"),
    ({"data": {"name": "cifar10", "root": "/no/such/dir"}}, "data.root"),
    ({"data": {"subset": 0}}, "data.subset"),
    ({"data": {"augment": "yes"}}, "data.augment"),
    ({"data": []}, "data"),
    ({"model": {"name": "resnet50"}}, "model.name"),
    ({"model": {"width_mult": 0}}, "model.width_mult"),
    ({"model": {"name": "mobilenetv2_tiny", "width_mult": 0.5}}, "model.width_mult"),
    ({"model": {"dropout": 1.0}}, "model.dropout"),
    ({"training": {"epochs": 0}}, "training.epochs"),
    ({"training": {"epochs": 2.5}}, "training.epochs"),
    ({"training": {"lr": -0.1}}, "training.lr"),
    ({"training": {"mode": "kd-typo"}}, "training.mode"),
    ({"training": {"batch_size": True}}, "training.batch_size"),
    ({"training": {"warmup_epochs": 50, "epochs": 5}}, "training.warmup_epochs"),
    ({"training": {"device": "tpu"}}, "training.device"),
    ({"netaug": {"r": 0.5}}, "netaug.r"),
    ({"netaug": {"s": 0}}, "netaug.s"),
    ({"netaug": {"s": 1.5}}, "netaug.s"),
    ({"netaug": {"aug_loss_weight": -1}}, "netaug.aug_loss_weight"),
    ({"netaug": {"min_w_fraction": 2}}, "netaug.min_w_fraction"),
    ({"netaug": {"expand_r": 3.5}}, "netaug.expand_r"),
    ({"netaug": {"mid_width": "output"}}, "netaug.mid_width"),
    ({"netaug": {"init": "zeros"}}, "netaug.init"),
    ({"netaug": {"expand_s": 0}}, "netaug.expand_s"),
    ({"netaug": {"unknown": 1}}, "netaug.unknown"),
]


@pytest.mark.parametrize("space,key", BAD, ids=[k for _, k in BAD])
def test_bad_space_raises_user_error_naming_the_key(tmp_path, space, key):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    with pytest.raises(UserError) as err:
        load_space(path)
    assert str(err.value).startswith(key), str(err.value)
    assert "\n" not in str(err.value)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netaug.train", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


@pytest.mark.parametrize("text,key", [
    ("netaug:\n  r: 0.5\n", "netaug.r"),
    ("training: [1, 2\n", "line"),
    ("data:\n  name: cifar10\n  root: /definitely/missing\n", "/definitely/missing"),
])
def test_cli_bad_space_exits_2_with_one_line_and_no_traceback(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    proc = run_cli("--space", str(path), "--out", str(out))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists(), "nothing is written before validation passes"


def test_cli_missing_space_file_and_bad_override_exit_2(tmp_path):
    proc = run_cli("--space", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "nope.yaml" in proc.stderr
    proc = run_cli("--space", str(ROOT / "spaces" / "mbv2.yaml"), "--set", "training.epochs=-3")
    assert proc.returncode == 2 and "training.epochs" in proc.stderr and "Traceback" not in proc.stderr


def test_docs_spaces_md_is_current():
    sys.path.insert(0, str(ROOT / "docs"))
    from gen_spaces import render

    assert (ROOT / "docs" / "spaces.md").read_text() == render(), "run: python docs/gen_spaces.py > docs/spaces.md"


def test_shipped_space_files_load(tmp_path):
    spaces = sorted((ROOT / "spaces").glob("*.yaml"))
    assert {p.name for p in spaces} >= {"mbv2.yaml", "mbv2-fashion-mnist.yaml", "mbv2-cifar10.yaml"}
    for path in spaces:
        overrides = [f"data.root={tmp_path}"] if "cifar10" in path.name or "imagenet" in path.name else []
        if "name: fashion-mnist" in path.read_text() and not Path("/usr/share/datasets/fashion-mnist").is_dir():
            overrides = [f"data.root={tmp_path}"]
        cfg = load_space(path, overrides)
        assert cfg.r_max() >= cfg.sweep.r.high and cfg.sweep.trials >= 1
    with pytest.raises(UserError, match=r"^data\.root"):
        load_space(ROOT / "spaces" / "mbv2-cifar10.yaml", ["data.root=/no/such/cifar"])
    imagenet = load_space(ROOT / "spaces" / "mbv2-tiny-imagenet.yaml", [f"data.root={tmp_path}"])
    assert (imagenet.data.loader, imagenet.data.resolution, imagenet.model.name) == ("stream", 144, "mobilenetv2_tiny")
    assert imagenet.final.workers * imagenet.training.batch_size == 2048  # the official global batch


def test_a_resume_may_change_where_a_run_executes_but_not_what_it_trains():
    """resume_conflicts against a run's space.json: resources, workers, retries, the data folder and the device
    may change; anything else is named with both values. Keys the schema gained since are not a change."""
    import json

    space = ROOT / "spaces" / "mbv2.yaml"
    ran = json.loads(json.dumps(load_space(space).to_dict()))
    same = ["sweep.resources.cpu=2", "final.workers=2", "supernet.max_failures=5", "data.root=/elsewhere",
            "data.workers=4", "training.device=cpu", "search.resources.cpu=0.5"]
    assert resume_conflicts(ran, load_space(space, same)) == []
    changed = load_space(space, ["training.lr=0.5", "sweep.trials=99", "sweep.aug_every={choices: [1, 2]}"])
    conflicts = resume_conflicts(ran, changed)
    assert conflicts[:2] == [("training.lr", ran["training"]["lr"], 0.5), ("sweep.trials", ran["sweep"]["trials"], 99)]
    (key, old, new), = conflicts[2:]  # a section that was null is one change, not one per leaf
    assert (key, old, new["choices"]) == ("sweep.aug_every", None, [1, 2]) and ran["sweep"]["aug_every"] is None
    older = json.loads(json.dumps(ran))
    del older["supernet"]["eval_every"]  # written before the schema had the key: its default on both sides
    assert resume_conflicts(older, load_space(space)) == []
    older["supernet"]["gone"] = 1  # a key the schema dropped since: no value could be given for it
    assert resume_conflicts(older, load_space(space)) == []
    older["training"]["batch_size"] = 7
    assert resume_conflicts(older, load_space(space)) == [("training.batch_size", 7, ran["training"]["batch_size"])]
