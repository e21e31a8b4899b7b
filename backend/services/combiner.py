"""Merge HDF5 fragments from other producers into per-run files (``damnit combiner run|now``).

Our own jobs write per-run files directly (docs/design.md), but the original's ``damnit.submit()`` and
other tools announce fragment files with ``file_submission`` messages (docs/spec.md "HDF5: fragments"). This merges them
with the same code our jobs use, updates the database and announces ``run_values_updated``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

import h5py
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from backend.base.messages import (
    FILE_SUBMISSION,
    FILE_SUBMISSION_TOPIC,
    MessageError,
    UpdateProducer,
    brokers_from_env,
    parse_message,
)
from backend.storage import h5format
from backend.storage.database import DamnitDB

log = logging.getLogger(__name__)

CONSUMER_GROUP = "xfel-da-damnit-combiner"
SPECIAL_GROUPS = (".reduced", ".preview", ".errors")
FRAGMENT_NAME = re.compile(r"p(\d+)_r(\d+)\..*\.ready\.h5$")
WAIT_FOR_FILE_S = 30.0  # shared filesystems may show a new file late


class CombineError(RuntimeError):
    """A fragment that cannot be merged; the message names the file and why."""


def fragment_variables(path: Path) -> list[str]:
    """Names of all variables a fragment holds (data, summaries, previews or errors)."""
    names: set[str] = set()
    with h5py.File(path, "r") as f:
        for key in f:
            if key in SPECIAL_GROUPS:
                names.update(f[key].keys())
            elif not key.startswith("."):
                names.add(key)
    return sorted(names)


def _provenance(path: Path) -> str | None:
    with h5py.File(path, "r") as f:
        value = f.attrs.get("provenance")
    return value.decode() if isinstance(value, bytes) else value


def combine_fragment(db_dir: str | Path, fragment: str | Path, proposal: int, run: int,
                     producer: UpdateProducer | None = None, *, wait: float = WAIT_FOR_FILE_S) -> list[str]:
    """Merge one fragment into ``extracted_data/p<prop>_r<run>.h5``, update the DB, announce the names."""
    db_dir = Path(db_dir).absolute()
    fragment = Path(fragment)
    if not fragment.is_absolute():
        fragment = db_dir / fragment
    deadline = time.monotonic() + wait
    while not fragment.is_file():
        if time.monotonic() > deadline:
            raise CombineError(f"fragment {fragment} for p{proposal} r{run} did not appear within {wait:.0f} s")
        time.sleep(0.5)
    try:
        names = fragment_variables(fragment)
        provenance = _provenance(fragment)
    except OSError as e:
        raise CombineError(f"cannot read fragment {fragment}: {e}") from None
    dest = db_dir / "extracted_data" / f"p{proposal}_r{run}.h5"
    h5format.merge_fragment(fragment, dest)
    reduced = h5format.read_reduced(dest, names)
    with DamnitDB.from_dir(db_dir) as db:
        db.ensure_run(proposal, run)
        db.set_variables(proposal, run, reduced, provenance=provenance)
        if producer is not None:
            producer.run_values_updated(db, proposal, run, [n for n in names if n != "start_time"])
    fragment.unlink(missing_ok=True)
    log.info("Combined %s into %s (%d variables)", fragment.name, dest.name, len(names))
    return names


def combine_all(db_dir: str | Path, producer: UpdateProducer | None = None) -> int:
    """``damnit combiner now``: merge every ``*.ready.h5`` fragment, oldest first, without Kafka."""
    db_dir = Path(db_dir).absolute()
    fragments = sorted((db_dir / "extracted_data").glob("*.ready.h5"), key=lambda p: p.stat().st_mtime)
    done = 0
    for frag in fragments:
        m = FRAGMENT_NAME.match(frag.name)
        if not m:
            log.warning("Skipping %s: not named p<proposal>_r<run>.<id>.ready.h5", frag)
            continue
        try:
            combine_fragment(db_dir, frag, int(m[1]), int(m[2]), producer, wait=0)
            done += 1
        except Exception as e:
            log.error("Could not combine %s: %s", frag, e)
    return done


async def run_combiner(broker: str | None = None, stop: asyncio.Event | None = None,
                       consumer_options: dict | None = None) -> None:
    """``damnit combiner run``: combine fragments announced on ``test.damnit.file_submissions``.

    Offsets are committed after each fragment is merged (at-least-once; merging twice is harmless).
    """
    brokers = brokers_from_env(broker)
    if brokers is None:
        raise RuntimeError("The combiner service needs a Kafka broker (AMORE_BROKER is 'none'); "
                           "use `damnit combiner now DIR` to merge fragments without one")
    stop = stop or asyncio.Event()
    producer = UpdateProducer(brokers)
    loop = asyncio.get_running_loop()
    delay = 0.5
    try:
        while not stop.is_set():
            consumer = AIOKafkaConsumer(FILE_SUBMISSION_TOPIC, bootstrap_servers=brokers, group_id=CONSUMER_GROUP,
                                        enable_auto_commit=False, auto_offset_reset="earliest",
                                        max_poll_records=1, **(consumer_options or {}))
            try:
                await consumer.start()
                delay = 0.5
                while not stop.is_set():
                    batches = await consumer.getmany(timeout_ms=200)
                    for tp, records in batches.items():
                        for rec in records:
                            await loop.run_in_executor(None, _handle_submission, rec, producer)
                            await consumer.commit({tp: rec.offset + 1})
            except (KafkaError, OSError) as e:
                log.warning("Kafka broker unavailable (%s); retrying in %.1f s", e, delay)
            finally:
                await consumer.stop()
            if not stop.is_set():
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
    finally:
        producer.close()


def _handle_submission(rec, producer: UpdateProducer) -> None:
    where = f"{rec.topic}[{rec.partition}]@{rec.offset}"
    try:
        kind, data = parse_message(rec.value)
        if kind != FILE_SUBMISSION:
            raise MessageError(f"unexpected message kind {kind!r}")
        db_dir, new_file = data["damnit_dir"], data["new_file"]
        proposal, run = int(data["proposal"]), int(data["run"])
    except (MessageError, KeyError, TypeError, ValueError) as e:
        log.warning("Skipping malformed file submission at %s: %s", where, e)
        return
    try:
        combine_fragment(db_dir, new_file, proposal, run, producer)
    except Exception as e:
        log.error("Could not combine %s for p%s r%s (%s): %s", new_file, proposal, run, where, e, exc_info=True)
