"""A description of the machine a benchmark ran on, stored beside its results."""

from __future__ import annotations

import json
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


#: The CPU features that decide which kernels run (GEMM, int8 dot products, bf16, AMX tiles).
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in KERNEL_FLAGS if flag in present]
    except OSError:
        pass
    return []


def describe_machine(
    packages: tuple[str, ...] = ("torch", "transformers", "onnxruntime-gpu", "onnxruntime-genai-cuda"),
) -> dict[str, Any]:
    import torch

    versions = {}
    for name in packages:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """``columns``: (key, header) pairs. Floats get three significant digits."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(k)) for k, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def save_results(
    stem: Path,
    title: str,
    intro: str,
    table: str,
    summary: list[str],
    machine: dict[str, Any],
    data: dict[str, Any],
) -> None:
    """Write ``stem``.json (the machine, ``data`` and the summary) and ``stem``.md (the table)."""
    stem.parent.mkdir(exist_ok=True)
    stem.with_suffix(".json").write_text(
        json.dumps({"machine": machine, **data, "summary": summary}, indent=2)
    )
    stem.with_suffix(".md").write_text(
        f"# {title}\n\n{intro}\n\n{table}\n\n" + "\n".join(f"- {s}" for s in summary) + "\n\n"
        f"Machine: {machine['cpu']} ({' '.join(machine.get('cpu_flags', []))}), {machine['cores']} cores, "
        f"GPU: {machine['gpu'] or 'none'}; "
        f"{', '.join(f'{k} {v}' for k, v in machine['packages'].items())}.\n"
    )
    print(f"\nwritten to {stem}.json and {stem}.md")
