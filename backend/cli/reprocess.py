"""``damnit reprocess RUNS [--direct|--watch] ...``: process runs already taken, here or on Slurm.

``--direct`` uses a pool of context workers on this machine with a progress bar; the default submits
Slurm array jobs; ``--watch`` runs one ``srun`` job at a time with its log shown live.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from backend.base.messages import UpdateProducer
from backend.base.paths import ProposalNotFound, run_log_path, runs_on_disk
from backend.base.runs import RunSpecError, parse_run_spec
from backend.cli.common import CLIError, command, damnit_dir_for, open_db
from backend.processing.requests import RunRequest
from backend.processing.run_processor import NothingProcessed, RunProcessor
from backend.services import slurm
from backend.storage import processing_state
from backend.storage.database import DamnitDB


@command
def cmd_reprocess(args: argparse.Namespace) -> int:
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

    try:
        wanted = parse_run_spec(args.run)
    except RunSpecError as e:
        raise CLIError(str(e)) from None
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
        _note_missing(db, missing)
    else:
        available = set(wanted) if args.mock else runs_on_disk(proposal)
        missing_runs = sorted(set(wanted) - available)
        if missing_runs:
            print(f"Warning: skipping {len(missing_runs)} runs because they don't exist: {missing_runs}",
                  file=sys.stderr)
        props_runs = [(proposal, r) for r in wanted if r in available]
        _note_missing(db, [(proposal, r) for r in missing_runs])
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


def _note_missing(db: DamnitDB, runs: list[tuple[int, int]]) -> None:
    """A skipped run that is marked failed gets this attempt as its failure: its old reason (a context
    error fixed since, say) would mislead the dashboard's readers. Runs not marked stay unmarked."""
    for p, r in runs:
        if processing_state.failure(db, p, r) is not None:
            processing_state.record_failure(db, p, r, processing_state.PROCESSING,
                                            f"reprocess: no files of run {r} of proposal {p} are on disk")


def _runs_on_disk_or_empty(proposal: int) -> set[int]:
    try:
        return runs_on_disk(proposal)
    except ProposalNotFound as e:
        print(f"Warning: {e}", file=sys.stderr)
        return set()


def _reprocess_direct(db_dir: Path, requests: list, n_workers: int | None) -> int:
    """Process locally with a pool of workers, a progress bar and a final summary line."""
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
    settings = slurm.SlurmSettings.from_settings(dict(db.metameta))
    failed = []
    for i, req in enumerate(requests):
        req.update_vars = i == 0
        cmd = ["srun", *settings.resource_options(False), "--job-name", req.job_name, "--chdir", str(db_dir),
               *slurm.job_command(req, db_dir)]
        log_path = run_log_path(db_dir, req.proposal, req.run, create=True)
        start = log_path.stat().st_size
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


def register(subparsers) -> None:
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
    p.set_defaults(func=cmd_reprocess)
