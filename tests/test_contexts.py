"""The context templates in contexts/ run over mock runs of their instrument, as a user would run them.

Each template is copied into a new DAMNIT folder with ``damnit init --context`` and processed with
``damnit reprocess --direct`` over mock runs that carry the instrument's real sources
(``backend.base.mockruns.make_instrument_run``). Every variable must get a value for every run (or
be a variable this test expects not to run), and the values that can be known from the mock data
(pulses decoded from the bunch pattern, photon energy, trains with signal) must be right.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from backend.base import mockruns
from backend.cli import main
from tests.infra import REPO

CONTEXTS = REPO / "contexts"
PROPOSAL = 4321
RUNS = (1, 2)
NTRAINS = 8


def _hits(run: int) -> int:
    return int(mockruns.signal_trains(PROPOSAL, run, NTRAINS).sum())


def _kev(instrument: str) -> Callable[[int], float]:
    return lambda run: mockruns.photon_energy_kev(instrument, run)


def _ev(instrument: str) -> Callable[[int], float]:
    return lambda run: 1000 * mockruns.photon_energy_kev(instrument, run)


@dataclass
class Case:
    template: str
    instrument: str  # whose mock runs it processes
    checks: dict[str, Callable[[int], object]] = field(default_factory=dict)  # name -> expected(run)
    not_run: tuple[str, ...] = ()  # proc variables, when the instrument's runs have no proc data


CASES = [
    Case("sase_base.py", "SPB", {"pulses": mockruns.pulses_per_train, "photon_energy": _kev("SPB"),
                                 "n_trains": lambda run: NTRAINS}),
    Case("sase_base.py", "MID", {"pulses": mockruns.pulses_per_train, "photon_energy": _kev("MID")}),
    Case("sase_base.py", "SQS", {"pulses": mockruns.pulses_per_train, "photon_energy": _kev("SQS")},
         not_run=("proc_size",)),
    Case("spb.py", "SPB", {"pulses": mockruns.pulses_per_train, "photon_energy": _kev("SPB"),
                           "agipd_frames": lambda run: 2, "agipd_memory_cells": lambda run: 352}),
    Case("fxe.py", "FXE", {"pulses": mockruns.pulses_per_train, "photon_energy": _kev("FXE"),
                           "jf_signal_trains": _hits, "lpd_frames": lambda run: 2}),
    Case("mid.py", "MID", {"pulses": mockruns.pulses_per_train, "photon_energy": _kev("MID"),
                           "jf_signal_trains": _hits}),
    Case("hed.py", "HED", {"pulses": mockruns.pulses_per_train, "photon_energy": _kev("HED"),
                           "jf_signal_trains": _hits}),
    Case("scs.py", "SCS", {"pulses": mockruns.pulses_per_train, "photon_energy": _ev("SCS"),
                           "dssc_frames": lambda run: 2}),
    Case("sqs.py", "SQS", {"pulses": mockruns.pulses_per_train, "photon_energy": _ev("SQS"),
                           "tof_peaks": mockruns.pulses_per_train}),
]

FAKE_MYMDC = """\
class Client:
    '''Answers mymdc# arguments as MyMdC would, without a network.'''

    def __init__(self, proposal):
        self.proposal = proposal

    def sample_name(self, run):
        return f"Sample {run % 2 + 1}"

    def run_type(self, run):
        return "Dark" if run == 1 else "Sample measurement"

    def techniques(self, run):
        return [{"name": "SFX", "identifier": "PaNET01188"}]
"""


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No Kafka, a headless matplotlib, and a MyMdC stand-in importable by the context workers."""
    monkeypatch.setenv("AMORE_BROKER", "none")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    (tmp_path / "fake_mymdc.py").write_text(FAKE_MYMDC)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{REPO}")
    monkeypatch.setenv("DAMNIT_MYMDC_CLIENT", "fake_mymdc:Client")


def _results(db_dir: Path) -> tuple[list[str], dict[tuple[int, str], tuple]]:
    conn = sqlite3.connect(db_dir / "runs.sqlite")
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM variables ORDER BY name")]
        rows = {(run, name): (value, json.loads(attrs) if attrs else {}) for run, name, value, attrs in
                conn.execute("SELECT run, name, value, attributes FROM run_variables")}
    finally:
        conn.close()
    return names, rows


@pytest.mark.parametrize("case", CASES, ids=[f"{c.template}-{c.instrument}" for c in CASES])
def test_template_gives_every_variable_a_value(case, tmp_path, mock_data_root):
    for run in RUNS:
        mockruns.make_instrument_run(mock_data_root, PROPOSAL, run, case.instrument, ntrains=NTRAINS)
    db_dir = tmp_path / "amore"
    assert main(["init", str(db_dir), "--proposal", str(PROPOSAL),
                 "--context", str(CONTEXTS / case.template)]) == 0
    assert main(["reprocess", *map(str, RUNS), "--direct", "--in", str(db_dir)]) == 0

    names, rows = _results(db_dir)
    assert len(names) >= 8, names
    assert set(case.checks) | set(case.not_run) <= set(names)
    problems = []
    for run in RUNS:
        for name in names:
            value, attrs = rows.get((run, name), (None, {}))
            if name in case.not_run:
                if (run, name) in rows:
                    problems.append(f"r{run} {name}: ran without proc data")
            elif (run, name) not in rows:
                problems.append(f"r{run} {name}: no value")
            elif value is None:
                problems.append(f"r{run} {name}: {attrs.get('error_cls')}: {attrs.get('error')}")
            elif name in case.checks and value != pytest.approx(case.checks[name](run), rel=1e-3):
                problems.append(f"r{run} {name}: {value!r}, expected {case.checks[name](run)!r}")
    assert not problems, "\n".join(problems)


def test_every_template_is_tested():
    assert {p.name for p in CONTEXTS.glob("*.py")} - {c.template for c in CASES} == {"demo_context.py"}


def test_templates_load_in_the_original_damnit(damnit_oracle):
    """Users of the original can start from our templates too: its loader accepts every one of them."""
    templates = sorted({c.template for c in CASES})
    code = (
        "import json; from pathlib import Path; from damnit.context import ContextFile\n"
        f"print(json.dumps({{t: sorted(ContextFile.from_py_file(Path({str(CONTEXTS)!r}) / t).vars)"
        f" for t in {templates!r}}}))"
    )
    loaded = damnit_oracle.run_json(code)
    for template in templates:
        text = (CONTEXTS / template).read_text()
        assert loaded[template] and all(f"def {name}(" in text for name in loaded[template]), template
