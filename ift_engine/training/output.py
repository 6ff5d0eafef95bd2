"""Where a training run writes, and the promises around it.

A run works in a hidden sibling of its output folder (``.NAME.training``) that holds the
checkpoints and a fingerprint of the spec and data; the finished model folder is renamed into
place only at the end, so an interrupted run never leaves a half-written model where the user
looks. ``--resume`` continues that folder only if it was made by the same spec and data. An
existing output is replaced only with ``overwrite`` and only when it holds a previous trained
model; nothing the engine did not create is deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import TrainError
from ..files import check_output_folder, describe_os_error, move_into_place
from ..models.resolve import MANIFEST
from .spec import TrainSpec

RUN_FILE = "ift_training_run.json"


def is_trained_model(folder: Path) -> bool:
    """Whether ``folder`` holds a model written by ``ift train`` (its manifest says so)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "base_model" in manifest and "training" in manifest


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
        base = Path(self.spec.base_model).expanduser()
        check_output_folder(
            self.out,
            "trained model",
            is_previous=is_trained_model,
            overwrite=self.overwrite,
            protected=(base,) if base.exists() else (),
        )

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
        try:
            stored = json.loads((self.work / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
        if not isinstance(stored, dict):
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
            try:
                json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
                found.append((int(folder.name.rpartition("-")[2]), folder))
            except (OSError, ValueError):
                continue
        return str(max(found)[1]) if found else None

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
