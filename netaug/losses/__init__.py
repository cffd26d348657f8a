"""Distillation losses: relational (RKD distance and angle) and Hinton KD."""

from netaug.losses.kd import kd_kl
from netaug.losses.rkd import rkd_angle, rkd_distance

__all__ = ["kd_kl", "rkd_angle", "rkd_distance"]
