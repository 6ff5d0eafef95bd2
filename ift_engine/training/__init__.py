"""Instruction fine-tuning: data formats, augmentation, masking, Trainer + LoRA, metrics."""

from .data import Example
from .run import TrainResult
from .spec import TrainSpec
from .trainer import TrainError, train

__all__ = ["Example", "TrainError", "TrainResult", "TrainSpec", "train"]
