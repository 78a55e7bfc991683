"""Training: the shared loop, checkpoints and augmentation."""

from apo.training.trainer import TrainConfig, train

__all__ = ["TrainConfig", "train"]
