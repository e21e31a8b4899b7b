"""Where things live: proposals' data folders, DAMNIT folders, databases and run logs.

One home for every path rule, so that the CLI, the listener, the jobs and the dashboard agree on them.
A proposal's folder is ``<data root>/<instrument>/<cycle>/p<NNNNNN>``; its official DAMNIT folder is
``usr/Shared/amore`` inside it (docs/spec.md, "Locations").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_ROOT = "/gpfs/exfel/exp"
DB_NAME = "runs.sqlite"
AMORE_SUBDIR = Path("usr", "Shared", "amore")


class ProposalNotFound(FileNotFoundError):
    """No data folder for a proposal number under any data root; the message names the roots searched."""


def data_roots() -> list[Path]:
    """Where proposals are looked for, in order: ``$XFEL_DATA_ROOT``, ``$EXTRA_DATA_DATA_ROOT``, then
    European XFEL's own ``/gpfs/exfel/exp``."""
    roots = [os.environ.get("XFEL_DATA_ROOT"), os.environ.get("EXTRA_DATA_DATA_ROOT"), DEFAULT_DATA_ROOT]
    return [Path(r) for r in dict.fromkeys(r for r in roots if r)]


def _proposal_dirs(proposal: int) -> list[Path]:
    return [d for root in data_roots() for d in sorted(root.glob(f"*/*/p{int(proposal):06d}")) if d.is_dir()]


def find_proposal_dir(proposal: int) -> Path | None:
    """The proposal's data folder, or None when no data root has it."""
    found = _proposal_dirs(proposal)
    return found[0] if found else None


def proposal_dir(proposal: int) -> Path:
    """The proposal's data folder; ``ProposalNotFound`` (saying where it looked) when there is none."""
    found = find_proposal_dir(proposal)
    if found is None:
        raise ProposalNotFound(f"proposal {proposal} not found (looked for */*/p{int(proposal):06d} under "
                               f"{', '.join(map(str, data_roots()))})")
    return found


def amore_dir(proposal: int) -> Path:
    """The proposal's official DAMNIT folder (which may not exist yet); ``ProposalNotFound`` if the
    proposal has no data folder."""
    return proposal_dir(proposal) / AMORE_SUBDIR


def find_database_dir(proposal: int) -> Path | None:
    """The proposal's official DAMNIT folder if it holds a database, else None."""
    for d in _proposal_dirs(proposal):
        if (d / AMORE_SUBDIR / DB_NAME).is_file():
            return d / AMORE_SUBDIR
    return None


@dataclass(frozen=True)
class ProposalFolder:
    """A proposal with a DAMNIT database, as found under a data root."""

    proposal: int
    instrument: str
    cycle: str
    db_dir: Path


def list_database_dirs() -> list[ProposalFolder]:
    """Every proposal under the data roots that has a DAMNIT database, newest cycle first (a proposal
    found under several roots is listed once, from the first root)."""
    found: dict[int, ProposalFolder] = {}
    for root in data_roots():
        for db in root.glob(f"*/*/p[0-9]*/{AMORE_SUBDIR.as_posix()}/{DB_NAME}"):
            folder = db.parents[3]
            number = folder.name[1:]
            if not number.isdigit() or int(number) in found:
                continue
            found[int(number)] = ProposalFolder(int(number), folder.parents[1].name, folder.parent.name, db.parent)
    return sorted(found.values(), key=lambda f: (f.cycle, f.proposal), reverse=True)


def db_path(db_dir: str | os.PathLike) -> Path:
    return Path(db_dir, DB_NAME)


def make_shared_dir(path: str | os.PathLike) -> Path:
    """Create a folder every member of the proposal may write to (mode 0777 when we own it), as the
    original does for ``extracted_data/`` and ``process_logs/``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    try:
        if path.stat().st_uid == os.getuid():
            os.chmod(path, 0o777)
    except OSError:
        pass
    return path


def run_log_path(db_dir: str | os.PathLike, proposal: int, run: int, *, create: bool = False) -> Path:
    """``process_logs/r<run>-p<proposal>.out``: everything processing a run says goes there.
    ``create``: make sure it exists, shared-writable (before a job that other users may rerun writes it)."""
    path = Path(db_dir) / "process_logs" / f"r{run}-p{proposal}.out"
    if create:
        append_log(path, "", newline=False)
    return path


def append_run_log(db_dir: str | os.PathLike, proposal: int, run: int, text: str) -> Path:
    """Append a line (or lines) to the run's log, creating the file shared-writable (0666)."""
    path = run_log_path(db_dir, proposal, run)
    append_log(path, text)
    return path


def append_log(path: str | os.PathLike, text: str, *, newline: bool = True) -> None:
    """Append ``text`` (with a final newline unless ``newline=False``) to a log file, created
    shared-writable."""
    path = Path(path)
    make_shared_dir(path.parent)
    new = not path.exists()
    with open(path, "a", encoding="utf-8", errors="backslashreplace") as f:
        f.write(text if not newline or text.endswith("\n") else text + "\n")
    if new:
        try:
            os.chmod(path, 0o666)
        except OSError:
            pass


def runs_on_disk(proposal: int) -> set[int]:
    """Run numbers with a ``raw/r<NNNN>`` folder, found the way extra-data finds runs
    (``$EXTRA_DATA_DATA_ROOT``); ``ProposalNotFound`` when extra-data has no folder for the proposal."""
    from extra_data.read_machinery import data_root_dir, find_proposal  # heavy: only when asked

    try:
        prop_dir = find_proposal(f"p{int(proposal):06d}")
    except Exception:  # extra-data raises a bare Exception when the folder is missing
        raise ProposalNotFound(f"proposal {proposal} has no data folder under {data_root_dir()} "
                               "(set EXTRA_DATA_DATA_ROOT to where the runs are)") from None
    return {int(p.name[1:]) for p in (Path(prop_dir) / "raw").glob("r*") if p.is_dir() and p.name[1:].isdigit()}
