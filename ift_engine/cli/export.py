"""``ift export``: a model to ONNX, checked against PyTorch."""

from __future__ import annotations

import argparse
import warnings
from typing import Any

from ..console import err, out


def add_parser(sub: Any) -> None:
    export = sub.add_parser("export", help="export a model to ONNX and check it against PyTorch")
    export.add_argument("model", help="alias, model folder or .gguf file")
    export.add_argument("--out", required=True, help="folder for the ONNX model")
    export.add_argument(
        "--quantize",
        choices=["int4", "int8", "fp16"],
        help="weight format besides fp32: int4, int8, fp16 (GPU) for causal LMs; int8, int4 for classifiers",
    )
    export.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    export.add_argument("--atol", type=float, default=1e-3, help="largest fp32 logit difference accepted")
    export.add_argument("--overwrite", action="store_true", help="replace a previous export in --out")
    export.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from ..engine import Engine
    from ..models.resolve import ModelSpec
    from ..onnx.export import check_export_arguments, check_export_target, export_model

    check_export_arguments(args.model, args.atol, args.device)  # before any slow work
    pool = Engine().pool
    spec = ModelSpec(name=args.model)
    check_export_target(args.out, args.model, args.overwrite)
    pool.check(spec)
    # torch's ONNX tracer warns about every Python branch it meets; the parity check is the
    # real test of the export, so keep the terminal for it.
    with err.status(f"exporting {args.model}"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = pool.locate(spec)
        manifest = export_model(
            source,
            args.out,
            backend=pool.backend_for(spec).backend,
            quantize=args.quantize,
            device=args.device,
            atol=args.atol,
            overwrite=args.overwrite,
        )
    for variant, parity in manifest["parity"].items():
        measures = ", ".join(f"{k} {v:.3g}" for k, v in parity.items() if k != "probes")
        out.print(f"{variant}: {measures} (over {parity['probes']} probe prompts)")
    out.print(f"exported to {args.out}; use it with  model: {args.out}")
    return 0
