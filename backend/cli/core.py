"""Core `damnit` verbs: init, proposal, new-id, db-config, read-context, reprocess, process (spec §6).

Flags follow the original's so existing scripts keep working. Every failure exits non-zero with a
message that says what went wrong and where.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import secrets
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backend.storage.database import DamnitDB

DEFAULT_DATA_ROOT = "/gpfs/exfel/exp"


class CLIError(Exception):
    """A user-facing error: printed as ``Error: ...`` and the command exits with status 1."""


# -- locating proposals, databases and runs ---------------------------------------------------------


def find_proposal_dir(proposal: int) -> Path:
    """The proposal's data directory, searched under $XFEL_DATA_ROOT, $EXTRA_DATA_DATA_ROOT, /gpfs/exfel/exp."""
    roots = [os.environ.get("XFEL_DATA_ROOT"), os.environ.get("EXTRA_DATA_DATA_ROOT"), DEFAULT_DATA_ROOT]
    seen = []
    for root in roots:
        if not root or root in seen:
            continue
        seen.append(root)
        for d in sorted(Path(root).glob(f"*/*/p{int(proposal):06d}")):
            if d.is_dir():
                return d
    raise CLIError(f"proposal {proposal} not found (looked for */*/p{int(proposal):06d} under "
                   f"{', '.join(seen)})")


def damnit_dir_for(proposal_or_dir: str | None) -> Path | None:
    """A DAMNIT directory from a path or a proposal number (its official <proposal>/usr/Shared/amore)."""
    if proposal_or_dir is None:
        return None
    path = Path(proposal_or_dir)
    if path.is_dir():
        return path.resolve()
    if proposal_or_dir.isdigit():
        return find_proposal_dir(int(proposal_or_dir)) / "usr" / "Shared" / "amore"
    raise CLIError(f"{proposal_or_dir} is not a proposal number or DAMNIT database directory")


def open_db(db_dir: Path) -> DamnitDB:
    """Open an existing database, with a clear error if `db_dir` is not a DAMNIT directory."""
    import sqlite3

    from backend.storage.database import DamnitDB, DatabaseVersionError, LegacyDatabaseError

    db_dir = Path(db_dir)
    if not db_dir.is_dir():
        raise CLIError(f"{db_dir} does not exist or is not a directory")
    if not (db_dir / "runs.sqlite").is_file():
        raise CLIError(f"{db_dir} is not a DAMNIT directory (no runs.sqlite); create one with `damnit init`")
    try:
        return DamnitDB.from_dir(db_dir)
    except (LegacyDatabaseError, DatabaseVersionError, sqlite3.DatabaseError) as e:
        raise CLIError(f"cannot open {db_dir / 'runs.sqlite'}: {e}") from None


def runs_on_disk(proposal: int) -> set[int]:
    """Run numbers with a raw/r<NNNN> folder, found the way extra-data finds runs."""
    from extra_data.read_machinery import data_root_dir, find_proposal

    try:
        prop_dir = find_proposal(f"p{int(proposal):06d}")
    except Exception:  # extra-data raises a bare Exception when the folder is missing
        raise CLIError(f"proposal {proposal} has no data folder under {data_root_dir()} "
                       "(set EXTRA_DATA_DATA_ROOT to where the runs are)") from None
    runs = set()
    for p in (Path(prop_dir) / "raw").glob("r*"):
        if p.is_dir() and p.name[1:].isdigit():
            runs.add(int(p.name[1:]))
    return runs


def parse_run_spec(specs: list[str]) -> list[int] | None:
    """Run numbers from ``['3', '5-7']``; None for ``['all']``. Bad specs raise CLIError."""
    if [s.lower() for s in specs] == ["all"]:
        return None
    runs: set[int] = set()
    for spec in specs:
        if spec.lower() == "all":
            raise CLIError("'all' cannot be combined with run numbers")
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", spec.strip())
        if not m:
            raise CLIError(f"bad run number {spec!r}: give integers (e.g. 12), ranges (12-20) or 'all'")
        first, last = int(m[1]), int(m[2] or m[1])
        if last < first:
            raise CLIError(f"bad run range {spec!r}: the end is before the start")
        runs.update(range(first, last + 1))
    return sorted(runs)


# -- verbs ---------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from backend.storage.database import initialize_proposal

    if args.proposal_or_dir.isdigit():
        proposal = int(args.proposal_or_dir)
        damnit_dir = find_proposal_dir(proposal) / "usr" / "Shared" / "amore"
    else:
        damnit_dir = Path(args.proposal_or_dir).resolve()
        if args.proposal is not None:
            proposal = args.proposal
        elif m := re.search(r"/p(\d+)/", str(damnit_dir) + "/"):
            proposal = int(m[1])
        else:
            raise CLIError("--proposal is required when the directory is not inside a proposal folder (p<N>/)")

    context_src = user_vars_src = None
    if args.like is not None:
        like_dir = damnit_dir_for(args.like)
        context_src = _existing_file(like_dir / "context.py")
        user_vars_src = _existing_file(like_dir / "runs.sqlite")
    if args.context is not None:
        context_src = _existing_file(Path(args.context))

    print(f"Setting up DAMNIT in {damnit_dir}")
    existed = (damnit_dir / "context.py").is_file()
    initialize_proposal(damnit_dir, proposal, context_file_src=context_src, user_vars_src=user_vars_src)
    if existed and context_src is not None:
        print(f"Kept the existing {damnit_dir / 'context.py'} (not overwritten by {context_src})")
    return 0


def _existing_file(p: Path) -> Path:
    if not p.is_file():
        raise CLIError(f"{p} is not a file")
    return p


def cmd_proposal(args: argparse.Namespace) -> int:
    db = open_db(Path.cwd())
    current = db.metameta.get("proposal")
    if args.proposal is None:
        print("Current proposal number:", current)
    elif args.proposal == current:
        print(f"No change - proposal {current} already set")
    else:
        db.metameta["proposal"] = args.proposal
        print(f"Changed proposal to {args.proposal} (was {current})")
    return 0


def cmd_new_id(args: argparse.Namespace) -> int:
    db = open_db(args.db_dir or Path.cwd())
    new_id = secrets.token_hex(20)
    db.metameta["db_id"] = new_id
    print(f"New database ID: {new_id}")
    return 0


def cmd_db_config(args: argparse.Namespace) -> int:
    db = open_db(Path.cwd())
    settings = db.metameta
    key = args.key.replace("-", "_") if args.key else None
    if args.delete:
        if not key:
            raise CLIError("no key specified to delete")
        if key not in settings:
            raise CLIError(f"key {key} not found")
        del settings[key]
    elif key and args.value is not None:
        value = args.value
        if args.num:
            try:
                value = int(value)
            except ValueError:
                try:
                    value = float(value)
                except ValueError:
                    raise CLIError(f"--num given but {args.value!r} is not a number") from None
        settings[key] = value
    elif key:
        if key not in settings:
            raise CLIError(f"key {key} not found")
        print(repr(settings[key]))
    else:
        for k, v in settings.items():
            print(f"{k}={v!r}")
    return 0


def cmd_read_context(args: argparse.Namespace) -> int:
    from backend.processing.run_processor import ContextLoadError, RunProcessor

    db_dir = Path.cwd()
    open_db(db_dir)
    processor = RunProcessor(db_dir)
    try:
        info = processor.read_context()
    except ContextLoadError as e:
        print(e, file=sys.stderr)
        return 1
    changed = processor.update_variables(info)
    n = len(info.get("variables", {}))
    print(f"Read {n} variable(s) from {processor.context_path}; {len(changed)} updated in the database")
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    from backend.services.job import run_process_command

    return run_process_command(args)


def cmd_reprocess(args: argparse.Namespace) -> int:
    from backend.processing.workers import RunRequest

    if not getattr(args, "debug", False):  # keep the terminal to the progress bar and the summary
        for noisy in ("extra_data", "aiokafka", "kafka"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    db_dir = damnit_dir_for(args.proposal_or_dir) or Path.cwd().resolve()
    db = open_db(db_dir)
    proposal = args.proposal if args.proposal is not None else db.metameta.get("proposal")
    if proposal is None:
        raise CLIError(f"no proposal number set in {db_dir / 'runs.sqlite'}; pass --proposal or run "
                       "`damnit proposal N`")
    proposal = int(proposal)

    wanted = parse_run_spec(args.run)
    if wanted is None:
        rows = db.conn.execute("SELECT proposal, run FROM run_info ORDER BY proposal, run").fetchall()
        recorded = [(int(p), int(r)) for p, r in rows]
        if args.mock:
            props_runs, missing = recorded, []
        else:
            on_disk: dict[int, set[int]] = {}
            props_runs, missing = [], []
            for p, r in recorded:
                if p not in on_disk:
                    on_disk[p] = _runs_on_disk_or_empty(p)
                (props_runs if r in on_disk[p] else missing).append((p, r))
        print(f"Reprocessing {len(props_runs)} runs already recorded, skipping {len(missing)}...")
    else:
        available = set(wanted) if args.mock else runs_on_disk(proposal)
        missing_runs = sorted(set(wanted) - available)
        if missing_runs:
            print(f"Warning: skipping {len(missing_runs)} runs because they don't exist: {missing_runs}",
                  file=sys.stderr)
        props_runs = [(proposal, r) for r in wanted if r in available]
        if not props_runs:
            raise CLIError("none of the given runs exist on disk; nothing to process")

    if not props_runs:
        print("No runs to process")
        return 0

    requests = [
        RunRequest(proposal=p, run=r, run_data="all", match=tuple(args.match), variables=tuple(args.var),
                   mock=args.mock)
        for p, r in props_runs
    ]
    limit = args.concurrent_jobs if args.concurrent_jobs and args.concurrent_jobs > 0 else None
    if args.direct:
        return _reprocess_direct(db_dir, requests, limit)
    if args.watch:
        return _reprocess_watch(db_dir, db, requests)
    return _reprocess_slurm(db_dir, requests, limit)


def _runs_on_disk_or_empty(proposal: int) -> set[int]:
    try:
        return runs_on_disk(proposal)
    except CLIError as e:
        print(f"Warning: {e}", file=sys.stderr)
        return set()


def _reprocess_direct(db_dir: Path, requests: list, n_workers: int | None) -> int:
    """Process locally with a pool of workers, a progress bar and a final summary line."""
    from tqdm import tqdm

    from backend.processing.run_processor import NothingProcessed, RunProcessor

    processor = RunProcessor(db_dir, n_workers=n_workers)
    failed: list = []
    var_errors = skipped = 0
    t0 = time.monotonic()
    bar = tqdm(total=len(requests), unit="run", desc="Processing", file=sys.stderr, dynamic_ncols=True)
    try:
        for outcome in processor.process(requests):
            if outcome.run_error:
                failed.append(outcome)
            else:
                var_errors += sum(1 for r in outcome.results if r.is_error and r.error_cls != "Skip")
                skipped += sum(1 for r in outcome.results if r.error_cls == "Skip")
            bar.set_postfix(failed=len(failed), refresh=False)
            bar.update(1)
    except NothingProcessed as e:
        bar.close()
        print(e, file=sys.stderr)
        print("Nothing was processed; the database is unchanged.", file=sys.stderr)
        return 1
    finally:
        bar.close()
        processor.close()
    elapsed = time.monotonic() - t0
    for outcome in failed:
        req, err = outcome.request, outcome.run_error
        print(f"  r{req.run} (p{req.proposal}) failed: {err.get('cls') or 'Error'}: {err.get('message')} "
              f"(log: {req.log_path})", file=sys.stderr)
    ok = len(requests) - len(failed)
    print(f"Processed {len(requests)} runs in {elapsed:.1f} s: {ok} succeeded, {len(failed)} failed, "
          f"{var_errors} variable errors, {skipped} skipped")
    return 1 if failed else 0


def _reprocess_watch(db_dir: Path, db, requests: list) -> int:
    """Run one Slurm job at a time with `srun`, showing each run's log live (the original's --watch)."""
    import subprocess

    from backend.services import slurm

    settings = slurm.SlurmSettings.from_settings(dict(db.metameta))
    failed = []
    for i, req in enumerate(requests):
        job = slurm.ExtractionRequest(req.proposal, req.run, req.run_data, match=tuple(req.match),
                                      variables=tuple(req.variables), mock=req.mock, update_vars=(i == 0))
        cmd = ["srun", *settings.resource_options(False), "--job-name", job.job_name, "--chdir", str(db_dir),
               *job.command(db_dir)]
        log_path = db_dir / "process_logs" / f"r{req.run}-p{req.proposal}.out"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        start = log_path.stat().st_size if log_path.exists() else 0
        try:
            with open(log_path, "a") as out:
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=slurm.job_env(), cwd=db_dir)
        except FileNotFoundError:
            raise CLIError("srun not found: Slurm is not available here; use --direct") from None
        _follow(log_path, start, proc)
        if proc.returncode != 0:
            failed.append(req.run)
            print(f"r{req.run}: job failed (exit code {proc.returncode}); see {log_path}", file=sys.stderr)
    print(f"Processed {len(requests)} runs with srun: {len(requests) - len(failed)} succeeded, "
          f"{len(failed)} failed")
    return 1 if failed else 0


def _follow(path: Path, offset: int, proc) -> None:
    """Copy what is appended to `path` to stdout until `proc` exits."""
    with open(path, "rb") as f:
        f.seek(offset)
        while True:
            done = proc.poll() is not None
            chunk = f.read()
            if chunk:
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
            if done:
                return
            time.sleep(0.2)


def _reprocess_slurm(db_dir: Path, requests: list, limit: int | None) -> int:
    """Submit the runs as Slurm array jobs (one array per proposal), announced as PENDING."""
    try:
        from backend.services import slurm
    except ImportError:
        slurm = None
    if slurm is None or not hasattr(slurm, "submit_reprocess"):
        raise CLIError("Slurm submission is unavailable in this installation; use --direct to process "
                       "on this machine")
    from backend.base.messages import UpdateProducer

    by_proposal: dict[int, list[int]] = {}
    for req in requests:
        by_proposal.setdefault(req.proposal, []).append(req.run)
    first = requests[0]
    producer = UpdateProducer.from_env()
    jobs = []
    try:
        for proposal, runs in by_proposal.items():
            jobs += slurm.submit_reprocess(db_dir, proposal, runs, match=first.match, variables=first.variables,
                                           mock=first.mock, concurrent_jobs=limit, producer=producer)
    except slurm.SubmissionError as e:
        raise CLIError(f"Slurm submission failed: {e} (use --direct to process on this machine)") from None
    finally:
        producer.close()
    ids = ", ".join(j.job_id for j in jobs)
    print(f"Submitted {len(jobs)} run(s) to Slurm: {ids}")
    print(f"Logs: {db_dir / 'process_logs'}/r<run>-p<proposal>.out")
    return 0


# -- registration --------------------------------------------------------------------------------


def _wrap(func):
    def run(args):
        try:
            return func(args)
        except CLIError as e:
            print(f"Error: {e}", file=sys.stderr)
            return 1
    return run


def register(subparsers) -> None:
    p = subparsers.add_parser("init", help="Set up a new DAMNIT folder")
    p.add_argument("proposal_or_dir", help="Either a proposal number or a directory path")
    p.add_argument("--proposal", type=int, help="Proposal number (if not in a proposal directory)")
    p.add_argument("--like", help="Proposal number or DAMNIT directory to copy the context file and "
                                  "user-editable variables from")
    p.add_argument("--context", type=Path, help="Context file to copy to the new location")
    p.set_defaults(func=_wrap(cmd_init))

    p = subparsers.add_parser("proposal", help="Get or set the proposal number to collect metadata from")
    p.add_argument("proposal", nargs="?", type=int, help="Proposal number to set, e.g. 1234")
    p.set_defaults(func=_wrap(cmd_proposal))

    p = subparsers.add_parser("new-id", help="Set a new (random) database ID, e.g. for a copied database")
    p.add_argument("db_dir", type=Path, nargs="?", default=None,
                   help="Path to the database directory (default: the current directory)")
    p.set_defaults(func=_wrap(cmd_new_id))

    p = subparsers.add_parser("db-config", help="See or change config in this database")
    p.add_argument("-d", "--delete", action="store_true", help="Delete the specified key")
    p.add_argument("--num", action="store_true", help="Set the given value as a number instead of a string")
    p.add_argument("key", nargs="?", help="The config key to see/change. If not given, list all config")
    p.add_argument("value", nargs="?", help="A new value for the given key")
    p.set_defaults(func=_wrap(cmd_db_config))

    p = subparsers.add_parser("read-context", help="Re-read the context file and update variables in the database")
    p.set_defaults(func=_wrap(cmd_read_context))

    p = subparsers.add_parser("reprocess", help="Extract data from specified runs")
    p.add_argument("--in", dest="proposal_or_dir",
                   help="Proposal number or DAMNIT directory in which to run (default: the current directory)")
    p.add_argument("--proposal", type=int,
                   help="Proposal number to take runs from (default: the one configured in the database)")
    p.add_argument("--match", type=str, action="append", default=[],
                   help="Process variables whose title contains this text (case-insensitive; repeatable)")
    p.add_argument("--var", type=str, action="append", default=[],
                   help="Process this variable (exact name; repeatable); overrides --match")
    p.add_argument("--watch", action="store_true", help="Run jobs one by one with live output in the terminal")
    p.add_argument("--direct", action="store_true",
                   help="Process on this machine with a pool of workers instead of via Slurm")
    p.add_argument("--concurrent-jobs", type=int, default=-1,
                   help="Maximum number of runs processed at once (default: the `concurrent_jobs` setting for "
                        "Slurm, the number of CPUs with --direct)")
    p.add_argument("--mock", action="store_true",
                   help="Use a fake run object instead of loading data from disk")
    p.add_argument("run", nargs="+", help="Run numbers (e.g. 96, 10-20), or 'all' for every run in the database")
    p.set_defaults(func=_wrap(cmd_reprocess))

    p = subparsers.add_parser("process", help="Process one run (what a Slurm job runs)")
    from backend.services.job import add_process_arguments

    add_process_arguments(p)
    p.set_defaults(func=_wrap(cmd_process))
