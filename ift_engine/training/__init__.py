"""Instruction fine-tuning: data formats, augmentation, masking, Trainer + LoRA, metrics."""

from .data import Example
from .spec import TrainSpec
from .trainer import TrainError, TrainResult, train

__all__ = ["Example", "TrainError", "TrainResult", "TrainSpec", "train"]
