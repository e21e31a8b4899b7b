"""What to process and what came of it: ``RunRequest`` and ``RunOutcome``.

One request type serves every path (``damnit reprocess --direct``, the listener's local processing,
Slurm jobs): the job command line is built from it by ``backend.services.slurm.job_command``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from backend.storage.records import VariableResult

RUN_DATA_CHOICES = ("raw", "proc", "all")


@dataclass
class RunRequest:
    """One run to process."""

    proposal: int
    run: int
    run_data: str = "all"  # "raw" | "proc" | "all"
    cluster: bool | None = None  # True: only cluster=True variables; False: all but those; None: all
    match: Sequence[str] = ()  # variables whose title contains one of these
    variables: Sequence[str] = ()  # variables by name (and what they depend on)
    mock: bool = False  # a fake run object instead of the run's files
    log_path: Path | None = None  # default: <db_dir>/process_logs/r<run>-p<prop>.out
    update_vars: bool = False  # jobs: update the variables table from the context file first
    processing_id: str = field(default_factory=lambda: str(uuid.uuid4()))  # names it in update messages

    def __post_init__(self) -> None:
        if self.run_data not in RUN_DATA_CHOICES:
            raise ValueError(f"run_data must be one of {RUN_DATA_CHOICES}, not {self.run_data!r}")

    @property
    def job_name(self) -> str:
        """The Slurm job name: shared by all jobs of one run, so they never run at once."""
        return f"r{self.run}-p{self.proposal}-damnit"


@dataclass
class RunOutcome:
    request: RunRequest
    results: list[VariableResult] = field(default_factory=list)  # summarised, includes start_time
    start_time: float | None = None
    run_error: dict | None = None  # error_info when the run could not be opened/processed at all
