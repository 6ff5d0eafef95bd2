"""Device and dtype choice shared by the PyTorch backends.

torch is imported inside the functions: registering the backends (every ``ift`` command does)
must not pay the seconds it takes to import torch and transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ..errors import ModelError

if TYPE_CHECKING:
    import torch

Device = Literal["auto", "cpu", "cuda"]
DType = Literal["auto", "float32", "float16", "bfloat16"]


def pick_device(device: Device) -> torch.device:
    """``auto`` takes CUDA when present; ``cuda`` without a GPU is an error, never a fallback."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            "device 'cuda' was asked for but PyTorch sees no CUDA GPU; use device: cpu or device: auto"
        )
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: DType, device: torch.device) -> torch.dtype:
    """``auto`` is float32 on CPU (fastest there) and float16 on CUDA."""
    import torch

    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)
