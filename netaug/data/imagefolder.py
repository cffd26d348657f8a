"""`root/{train,test}/<class>/*.png|jpg` folders, loaded once into memory at a fixed resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from netaug.data.tensors import ImageSet
from netaug.errors import UserError

EXTENSIONS = {".png", ".jpg", ".jpeg"}


def class_names(root: str | Path) -> list[str]:
    train = Path(root).expanduser() / "train"
    if not train.is_dir():
        raise UserError(f"data.root: no such directory: {train} (expected layout: root/train/<class>/*.png|jpg, "
                        "optionally root/val and root/test alike)")
    names = sorted(p.name for p in train.iterdir() if p.is_dir())
    if not names:
        raise UserError(f"data.root: {train} has no class folders")
    return names


def load_imagefolder_split(root: str | Path, split: str, resolution: int, classes: list[str]) -> ImageSet:
    """One split as uint8 (N, 3, resolution, resolution) RGB; labels follow `classes` order."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(root).expanduser() / split
    if not folder.is_dir():
        raise UserError(f"data.root: no such directory: {folder}")
    images, labels = [], []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() not in EXTENSIONS:
                continue
            try:
                with Image.open(path) as img:
                    img = img.convert("RGB").resize((resolution, resolution), Image.BILINEAR)
                    images.append(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
            except (UnidentifiedImageError, OSError) as exc:
                raise UserError(f"data.root: cannot read image {path} ({exc})") from None
            labels.append(label)
    if not images:
        raise UserError(f"data.root: {folder} holds no .png or .jpg images")
    return ImageSet(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64))
