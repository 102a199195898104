"""Procedural outdoor road scenes with pixel-exact ground truth, deterministic per (seed, index)."""

from perception_core.sim.scene import TRAIN_SEED, VALIDATION_SEED, render_batch, render_scene

__all__ = ["TRAIN_SEED", "VALIDATION_SEED", "render_batch", "render_scene"]
