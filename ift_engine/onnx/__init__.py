"""ONNX: exporting a fine-tuned model (``export``: onnxruntime-genai's model builder for causal
LMs, torch.onnx for classifiers), checking an export against PyTorch (``parity``), LoRA adapters
as inputs of one base export (``lora``), and the ``onnx`` backend that runs exports, exporting a
PyTorch folder on first use (``backend``). The runtimes themselves are in ``models.ort`` and
``models.genai``.
"""
