"""Shared fixtures: mock run data and the real components (Kafka, Slurm, Chromium, the original DAMNIT).

Real components are started by the tests themselves on loopback; if one cannot start, the test that
asked for it fails with the component's log, it is never skipped.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from backend.base import mockruns

_COMPONENT_MARKERS = {
    "damnit_oracle": "oracle",
    "kafka_broker": "kafka", "kafka_broker_session": "kafka", "amore_broker": "kafka",
    "slurm_cluster": "slurm", "slurm_cluster_session": "slurm",
    "chromium_browser": "browser", "page": "browser",
}


def pytest_collection_modifyitems(items):
    """Mark tests by the real components they use, so ``-m "not browser"`` etc. select by component."""
    for item in items:
        for marker in {m for f, m in _COMPONENT_MARKERS.items() if f in getattr(item, "fixturenames", ())}:
            item.add_marker(marker)


@pytest.fixture
def mock_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data root, with ``EXTRA_DATA_DATA_ROOT`` pointing at it (also for subprocesses)."""
    root = tmp_path / "exp"
    root.mkdir()
    monkeypatch.setenv("EXTRA_DATA_DATA_ROOT", str(root))
    return root


@pytest.fixture
def make_mock_runs(mock_data_root: Path) -> Callable[..., Path]:
    """Factory: ``make_mock_runs(proposal, runs, with_proc=False, **make_run_kw) -> proposal dir``."""

    def make(proposal: int, runs: Iterable[int] | int, *, with_proc: bool = False, **kw) -> Path:
        if isinstance(runs, int):
            runs = [runs]
        return mockruns.make_proposal(mock_data_root, proposal, runs, with_proc=with_proc, **kw)

    return make


# --- the original DAMNIT (test oracle) ------------------------------------------------------------

@pytest.fixture(scope="session")
def damnit_oracle():
    """The original ``damnit[backend]`` from PyPI in its own cached venv (see tests/infra/oracle.py).

    ``.python``, ``.run_python(code, cwd=, env=) -> stdout``, ``.run_json(code) -> obj`` (last line of
    output), ``.damnit(*args, cwd=, env=, check=True) -> CompletedProcess``. AMORE_BROKER defaults to
    ``none`` in its environment.
    """
    from tests.infra.oracle import OracleError, ensure_oracle

    try:
        return ensure_oracle()
    except (OracleError, OSError, subprocess.SubprocessError) as e:
        pytest.fail(f"could not build the damnit oracle venv: {e}", pytrace=False)


# --- Kafka ------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def kafka_broker_session(tmp_path_factory):
    """The session's Tansu broker (prefer ``kafka_broker``, which also restarts it if a test stopped it)."""
    from tests.infra.kafka import BrokerError, TansuBroker

    broker = TansuBroker(tmp_path_factory.mktemp("tansu"))
    try:
        broker.start()
    except BrokerError as e:
        pytest.fail(str(e), pytrace=False)
    yield broker
    broker.stop()


@pytest.fixture
def kafka_broker(kafka_broker_session):
    """A running Tansu broker: ``.address`` ("127.0.0.1:PORT"), ``.stop()``, ``.kill()``, ``.start()``.

    Shared by the session; started again (same port, empty: storage is in memory) if an earlier test
    left it stopped. Consumers in tests should use ``FAST_GROUP_CONSUMER_SETTINGS``.
    """
    from tests.infra.kafka import BrokerError

    try:
        kafka_broker_session.start()
    except BrokerError as e:
        pytest.fail(str(e), pytrace=False)
    return kafka_broker_session


@pytest.fixture
def amore_broker(kafka_broker, monkeypatch):
    """``AMORE_BROKER`` set to the test broker's address for this test; returns the broker."""
    monkeypatch.setenv("AMORE_BROKER", kafka_broker.address)
    return kafka_broker


# --- Slurm ------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def slurm_cluster_session(tmp_path_factory):
    """The session's one-node Slurm cluster (does not set SLURM_CONF; see ``slurm_cluster``)."""
    from tests.infra.slurm import SlurmCluster, SlurmError, stop_abandoned_clusters

    stop_abandoned_clusters()
    # Short path: the munge socket path must fit in a unix socket address.
    cluster = SlurmCluster(Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp")))
    try:
        cluster.start()
    except (SlurmError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"the test Slurm cluster did not start: {e}", pytrace=False)
    yield cluster
    cluster.stop()
    shutil.rmtree(cluster.dir, ignore_errors=True)


@pytest.fixture
def slurm_cluster(slurm_cluster_session, monkeypatch):
    """Slurm for this test: SLURM_CONF is set (so sbatch/squeue/scancel reach it), unset afterwards.

    ``.conf``, ``.env``, ``.sbatch(*args, wrap=) -> job id``, ``.job_state(id)``, ``.wait_job(id)``,
    ``.job_output(id)``, ``.run(cmd, *args)``, ``.log_tail()``.
    """
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster_session.conf))
    return slurm_cluster_session


# --- supervisor -------------------------------------------------------------------------------------

@pytest.fixture
def make_supervisor(tmp_path):
    """Factory: ``make_supervisor({name: command}) -> Supervisor`` (started; shut down after the test)."""
    from tests.infra.supervisor import Supervisor, SupervisorError

    started = []

    def make(programs: dict[str, str], **kw):
        sup = Supervisor(tmp_path / f"supervisor{len(started)}", programs, **kw)
        try:
            sup.start()
        except SupervisorError as e:
            pytest.fail(str(e), pytrace=False)
        started.append(sup)
        return sup

    yield make
    for sup in started:
        sup.stop()


# --- browser ----------------------------------------------------------------------------------------

@pytest.fixture
def chromium_browser():
    """Debian Chromium launched through Playwright's sync API (a ``playwright.sync_api.Browser``).

    Per test (about 0.7 s), not per session: while Playwright's sync API is active its event loop counts
    as running in the main thread, so ``asyncio.run`` fails there; inside a browser test use
    ``tests.infra.aio.run_async``.
    """
    from tests.infra.browser import BrowserError, launch_chromium

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed (pip install playwright; never `playwright install`)",
                    pytrace=False)
    pw = sync_playwright().start()
    try:
        browser = launch_chromium(pw)
    except (BrowserError, Exception) as e:
        pw.stop()
        pytest.fail(f"Chromium did not start: {e}", pytrace=False)
    yield browser
    browser.close()
    pw.stop()


@pytest.fixture
def page(chromium_browser):
    """A fresh browser context and page for one test; console errors are kept in ``page.console_errors``."""
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.console_errors = []
    pg.on("console", lambda msg: msg.type == "error" and pg.console_errors.append(msg.text))
    pg.set_default_timeout(15000)
    yield pg
    context.close()
