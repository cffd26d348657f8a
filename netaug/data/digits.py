"""scikit-learn's bundled 8x8 digits (1,797 real images, shipped in the wheel), upsampled."""

from __future__ import annotations

import numpy as np
import torch

from netaug.data.tensors import ImageSet


def load_digits_images() -> ImageSet:
    """All digits as uint8 (N, 1, 8, 8) on the 0..255 scale (the raw data is 0..16)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)
    images = torch.from_numpy(np.rint(pixels).astype(np.uint8)).unsqueeze(1)
    return ImageSet(images, torch.from_numpy(np.asarray(bunch.target, dtype=np.int64)))
