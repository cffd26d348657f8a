"""Distillation losses: relational (RKD distance and angle) and Hinton KD."""

from netaug.losses.kd import kd_kl
from netaug.losses.rkd import relations, rkd_angle, rkd_distance, rkd_loss

__all__ = ["kd_kl", "relations", "rkd_angle", "rkd_distance", "rkd_loss"]
