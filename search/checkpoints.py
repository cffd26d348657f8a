"""Trainer checkpoints as Ray Tune checkpoints: one folder holding `trainer.pt` and the space it was made with."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from ray import tune

STATE_FILE = "trainer.pt"
SPACE_FILE = "space.json"


@contextmanager
def trainer_checkpoint(state: dict, space: dict) -> Iterator[tune.Checkpoint]:
    """A Tune checkpoint of `state` in a temporary folder (Tune copies it to the run's storage path)."""
    with tempfile.TemporaryDirectory(prefix="netaug-ckpt-") as folder:
        torch.save(state, Path(folder) / STATE_FILE)
        (Path(folder) / SPACE_FILE).write_text(json.dumps(space))
        yield tune.Checkpoint.from_directory(folder)


def load_trainer_state(checkpoint: tune.Checkpoint) -> dict:
    """The trainer state inside a Tune checkpoint, from local or remote (shared) storage."""
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)
