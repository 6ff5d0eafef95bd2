"""Device and dtype choice shared by the PyTorch backends.

torch is imported inside the functions: registering the backends (every ``ift`` command does)
must not pay the seconds it takes to import torch and transformers.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ModelError, first_line

if TYPE_CHECKING:
    import torch

Device = Literal["auto", "cpu", "cuda"]
DType = Literal["auto", "float32", "float16", "bfloat16"]


def inference_mode() -> AbstractContextManager[Any]:
    """PyTorch's inference mode (no autograd records): what a model's worker runs in."""
    import torch

    return torch.inference_mode()


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


def load_pretrained(
    auto_class: Any, kind: str, name: str, source: str, device: Device, dtype: DType
) -> tuple[Any, Any]:
    """(model in eval mode on its device, tokenizer) from a folder or hub id; a failure is one
    ``ModelError`` naming the model and its source."""
    from transformers import AutoTokenizer

    target = pick_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = auto_class.from_pretrained(source, dtype=pick_dtype(dtype, target)).to(target).eval()
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load {kind} '{name}' from {source}: {first_line(exc)}") from exc
    return model, tokenizer


def release_torch_model(owner: Any) -> None:
    """Drop ``owner.model`` (a torch module) and hand its device memory back."""
    import gc

    on_cuda = str(getattr(owner, "device", "cpu")).startswith("cuda")
    del owner.model
    gc.collect()
    if on_cuda:
        import torch

        torch.cuda.empty_cache()
