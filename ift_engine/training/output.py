"""Where a training run writes, and the promises around it.

A run works in a hidden sibling of its output folder (``.NAME.training``) that holds the
checkpoints and a fingerprint of the spec and data; the finished model folder is renamed into
place only at the end, so an interrupted run never leaves a half-written model where the user
looks. ``--resume`` continues that folder only if it was made by the same spec and data. An
existing output is replaced only with ``overwrite`` and only when it holds a previous trained
model and nothing but the files its manifest lists; nothing the engine did not create is deleted,
and no folder holding a file the run reads. The output is locked while the run works.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from ..errors import TrainError
from ..files import (
    OutputLock,
    check_output_folder,
    describe_os_error,
    move_into_place,
    read_json_mapping,
    write_manifest,
)
from ..models.manifest import MANIFEST, read_manifest
from .spec import TrainSpec

RUN_FILE = "ift_training_run.json"


def trained_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a model written by ``ift train`` in ``folder``, else None."""
    manifest = read_manifest(folder)
    return manifest if manifest and "base_model" in manifest and "training" in manifest else None


def local_paths(value: Any) -> list[Path]:
    """The paths that exist among the strings in ``value`` (a string, a list or a mapping)."""
    if isinstance(value, str):
        return [Path(value).expanduser()] if Path(value).expanduser().exists() else []
    values = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [path for item in values for path in local_paths(item)]


def read_paths(spec: TrainSpec) -> tuple[Path, ...]:
    """What the run reads from disk: the base model and the dataset files and folders."""
    found = local_paths(spec.base_model)
    for dataset in spec.datasets:
        found += local_paths(dataset.path)
        found += local_paths([dataset.options.get(key) for key in ("path", "data_files")])
    return tuple(found)


def spec_fingerprint(spec: TrainSpec) -> str:
    """Everything that shapes the run except where it is written."""
    text = json.dumps(spec.model_dump(mode="json", exclude={"output"}), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_main_process() -> bool:
    """Rank 0 (or no distributed launch): the one process that writes files."""
    return os.environ.get("RANK", "0") == "0"


class RunFolder:
    """The working folder of one training run (see the module docstring)."""

    def __init__(self, spec: TrainSpec, *, resume: bool = False, overwrite: bool = False) -> None:
        self.out = Path(spec.output)
        self.work = self.out.parent / f".{self.out.name}.training"
        self.spec = spec
        self.resume = resume
        self.overwrite = overwrite
        self._created = False

    @property
    def checkpoints(self) -> Path:
        return self.work / "checkpoints"

    def _check_output(self) -> None:
        check_output_folder(
            self.out,
            "trained model",
            previous=trained_manifest,
            overwrite=self.overwrite,
            protected=read_paths(self.spec),
        )

    def lock(self) -> AbstractContextManager[Any]:
        """Hold the output against a second run until this one ends (rank 0 alone writes, so
        under torchrun it alone locks)."""
        return OutputLock(self.out, "trained model") if is_main_process() else nullcontext()

    def check(self) -> None:
        """Refuse, before any work, an output or a resume that would lose or mix up data."""
        self._check_output()
        if self.resume:
            if not self.checkpoints.is_dir():
                raise TrainError(
                    f"{self.out}: --resume: no interrupted run to continue ({self.work} does not exist); "
                    "run without --resume"
                )
            return
        if self.work.exists() and not self.overwrite:
            raise TrainError(
                f"{self.out}: an interrupted run left {self.work}; pass --resume to continue it, or "
                "--overwrite to start again"
            )
        if self.work.exists() and not (self.work / RUN_FILE).exists():
            raise TrainError(f"{self.work} was not made by ift train; move it away and run again")

    def start(self, data_fingerprint: str) -> None:
        """Create the folder (or, on resume, check it is the same run's)."""
        record = {"spec": spec_fingerprint(self.spec), "data": data_fingerprint}
        if self.resume:
            self._check_same_run(record)
            return
        if not is_main_process():
            return
        try:
            if self.work.exists():
                shutil.rmtree(self.work)  # checked above: an earlier run of ours, --overwrite given
            self.work.mkdir(parents=True)
            self._created = True
            (self.work / RUN_FILE).write_text(json.dumps(record, indent=2))
        except OSError as exc:
            raise TrainError(
                f"{self.work}: cannot create the training folder: {describe_os_error(exc)}"
            ) from None

    def abandon(self) -> None:
        """After a failure: remove the folder this run made if it holds no complete checkpoint
        (nothing to resume), so the next run starts without --resume or --overwrite."""
        if self.resume or not self._created or not is_main_process():
            return
        if self.last_checkpoint() is None:
            shutil.rmtree(self.work, ignore_errors=True)

    def _check_same_run(self, record: dict[str, Any]) -> None:
        stored = read_json_mapping(self.work / RUN_FILE)
        if stored is None:
            raise TrainError(
                f"{self.work}: --resume: the run has no readable {RUN_FILE}; start again with --overwrite"
            )
        for key, what in (("spec", "training file"), ("data", "training data")):
            if stored.get(key) != record[key]:
                raise TrainError(
                    f"{self.out}: --resume: the checkpoint was made with another {what}; resume with "
                    "the same file and data, or start again with --overwrite"
                )

    def last_checkpoint(self) -> str | None:
        """The newest complete checkpoint. Transformers writes its ``trainer_state.json`` last,
        so a checkpoint cut short by a kill has none (or a broken one) and is passed over."""
        found = []
        for folder in self.checkpoints.glob("checkpoint-*"):
            step = folder.name.rpartition("-")[2]
            if step.isdigit() and read_json_mapping(folder / "trainer_state.json") is not None:
                found.append((int(step), folder))
        return str(max(found)[1]) if found else None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """The model's manifest, listing every file of the finished folder (see ``finish``)."""
        write_manifest(self.work, MANIFEST, manifest, skip=(self.checkpoints.name,))

    def finish(self) -> None:
        """Drop the checkpoints (the model is complete) and rename the finished folder into place,
        replacing a previous trained model."""
        self._check_output()  # nothing of the user's appeared there meanwhile
        try:
            shutil.rmtree(self.checkpoints, ignore_errors=True)
            move_into_place(self.work, self.out)
        except OSError as exc:
            raise TrainError(
                f"{self.out}: cannot move the trained model into place: {describe_os_error(exc)}; "
                f"it is complete in {self.work}"
            ) from None
