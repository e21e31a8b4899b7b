"""The command a processing job runs: ``python -m backend.services.job PROPOSAL RUN raw|proc|all ...``.

Slurm jobs (``backend/services/slurm.py``) and ``damnit process`` run it to process one run with a
``RunProcessor``; a job that did not run ``cluster=True`` variables hands them to a job on a full node.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from backend.base.messages import UpdateProducer
from backend.processing.run_processor import NothingProcessed, RunProcessor
from backend.processing.workers import RunRequest
from backend.services import slurm

log = logging.getLogger(__name__)


def add_process_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("proposal", type=int)
    parser.add_argument("run", type=int)
    parser.add_argument("run_data", choices=("raw", "proc", "all"))
    parser.add_argument("--db-dir", type=Path, default=None,
                        help="DAMNIT database directory (default: the current directory)")
    parser.add_argument("--processing-id", type=str, default=None)
    parser.add_argument("--cluster-job", action="store_true",
                        help="Run only cluster=True variables (this job has a full node)")
    parser.add_argument("--var", action="append", default=[], help="Variable name to process (repeatable)")
    parser.add_argument("--match", action="append", default=[],
                        help="Process variables whose title contains this text (repeatable)")
    parser.add_argument("--update-vars", action="store_true",
                        help="Update the variables table from the context file first")
    parser.add_argument("--mock", action="store_true", help="Use a fake run object instead of reading data")
    parser.add_argument("--sandbox-args", type=str, default=None,
                        help="Command prefix wrapping the context processes: `<args> <proposal> -- <python ...>`")


def run_process_command(args: argparse.Namespace) -> int:
    """Process one run as a Slurm job (or from the command line); exit code 0 only if it was stored."""
    # One producer for the whole job, closed before the interpreter exits: an unclosed one ends the
    # job's log with asyncio's "Unclosed AIOKafkaProducer" / "Task was destroyed" complaints.
    producer = UpdateProducer.from_env()
    try:
        return _process(args, producer)
    finally:
        producer.close()


def _process(args: argparse.Namespace, producer: UpdateProducer) -> int:
    db_dir = (args.db_dir or Path.cwd()).resolve()
    try:
        processor = RunProcessor(db_dir, sandbox_args=args.sandbox_args, producer=producer)
    except Exception as e:
        print(f"Error: cannot open DAMNIT database in {db_dir}: {e}", file=sys.stderr)
        return 2
    in_slurm = bool(os.environ.get("SLURM_JOB_ID"))
    # A job on a full node runs cluster variables; other Slurm jobs leave them to such a job;
    # a plain command-line run does everything.
    cluster = True if args.cluster_job else (False if in_slurm else None)
    req = RunRequest(proposal=args.proposal, run=args.run, run_data=args.run_data, cluster=cluster,
                     match=tuple(args.match), variables=tuple(args.var), mock=args.mock)
    ids = {id(req): args.processing_id} if args.processing_id else None
    t0 = time.monotonic()
    try:
        with processor:
            outcomes = list(processor.process([req], update_vars=args.update_vars, processing_ids=ids))
    except NothingProcessed as e:
        print(e, file=sys.stderr)
        return 3
    failed = [o for o in outcomes if o.run_error]
    if failed:
        err = failed[0].run_error
        print(f"p{args.proposal} r{args.run} failed: {err.get('cls')}: {err.get('message')}", file=sys.stderr)
        return 1
    if cluster is False and _selects_cluster_variables(processor.context_info, req):
        _submit_cluster_followup(db_dir, req, producer)
    n_err = sum(1 for o in outcomes for r in o.results if r.is_error)
    print(f"Processed p{args.proposal} r{args.run} in {time.monotonic() - t0:.1f} s "
          f"({n_err} variable errors)", file=sys.stderr)
    return 0


def _selects_cluster_variables(info: dict | None, req: RunRequest) -> bool:
    variables = (info or {}).get("variables", {})
    for name, v in variables.items():
        if not v.get("cluster"):
            continue
        if req.variables:
            if name in req.variables:
                return True
        elif not req.match or any(m.lower() in (v.get("title") or name).lower() for m in req.match):
            return True
    return False


def _submit_cluster_followup(db_dir: Path, req: RunRequest, producer: UpdateProducer) -> None:
    """Hand cluster=True variables to a job on a full node, if the context has any (docs/spec.md "Processing
    jobs: inside a job")."""
    try:
        slurm.submit_cluster_job(db_dir, req, producer=producer)
    except Exception as e:
        log.error("Could not submit a cluster job for p%s r%s: %s", req.proposal, req.run, e)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.services.job",
                                     description="Process one run of a DAMNIT database")
    add_process_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_process_command(args)


if __name__ == "__main__":
    sys.exit(main())
