"""Write small European XFEL-style runs with plausible, non-zero data.

Tests, the demo and the benchmarks need runs that `extra_data.open_run` can find and whose values differ
from run to run, so that tables, trendlines and thumbnails have something to show. We build the files
with extra-data's own mock writer (so the layout is exactly what extra-data expects) and then fill the
all-zero datasets with values.

Layout (set ``EXTRA_DATA_DATA_ROOT=ROOT`` and ``extra_data.open_run(proposal, run)`` finds it)::

    ROOT/<INSTRUMENT>/<CYCLE>/p<NNNNNN>/raw/r<NNNN>/RAW-R<NNNN>-DA01-S00000.h5
    ROOT/<INSTRUMENT>/<CYCLE>/p<NNNNNN>/proc/r<NNNN>/CORR-R<NNNN>-DA01-S00000.h5   (with_proc=True)

The proposal directory (``ROOT/<INSTRUMENT>/<CYCLE>/p<NNNNNN>``) is what ``make_proposal`` returns; the
original DAMNIT puts a proposal's database in ``<proposal dir>/usr/Shared/amore`` (made by ``damnit init``).

Sources and the keys filled with values (all per train unless marked "run"):

raw
  ``SA1_XTD2_XGM/DOOCS/MAIN`` (XGM)
    control ``pulseEnergy.photonFlux`` [uJ] (gamma noise around a run-dependent mean),
    ``pulseEnergy.nummberOfBunches``, ``pulseEnergy.wavelengthUsed`` [nm], ``beamPosition.ixPos/iyPos``
    [mm], ``current.*.output``, ``pressure.pressure1``, ``state`` (``ON``; first 5 trains ``OFF``)
  ``SA1_XTD2_XGM/DOOCS/MAIN:output`` ``data.intensityTD`` (1000 slots, the first nummberOfBunches
    filled with per-pulse energies [uJ], the rest 0), ``data.intensityAUXTD``, ``data.xTD``, ``data.yTD``
  ``SPB_IRU_CAM/CAM/SIDEMIC:daqOutput`` ``data.image.pixels`` (uint16, 64x48 by default: a gaussian
    spot whose position and brightness vary per run, on a noisy background)
  ``SPB_IRU_MOTORS/MOTOR/SAMPLE_X`` (motor) control ``actualPosition``, ``targetPosition``,
    ``encoderPosition`` [mm] (the sample scans 0.25 mm per run), ``isOnTarget``
proc (``with_proc=True``)
  ``SPB_XTD9_SPECTROMETER/PROC/SPECTRUM:output`` ``data.spectrum`` (float32, 200 bins: a peak that moves
    with the run) and ``data.photonEnergy`` [eV] (the bin centres)

Runs start at ``BASE_START_TIME + (run - 1) * RUN_SPACING_S`` unless ``start_time`` is given, trains are
100 ms apart, and ``run.train_timestamps()`` returns those times, so DAMNIT's ``start_time`` is
meaningful and increases with the run number. Values are reproducible: the random seed defaults to a
function of (proposal, run).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

XGM_ID = "SA1_XTD2_XGM/DOOCS/MAIN"
CAMERA_ID = "SPB_IRU_CAM/CAM/SIDEMIC"
MOTOR_ID = "SPB_IRU_MOTORS/MOTOR/SAMPLE_X"
SPECTROMETER_ID = "SPB_XTD9_SPECTROMETER/PROC/SPECTRUM"

BASE_START_TIME = datetime(2025, 3, 14, 8, 0, tzinfo=timezone.utc).timestamp()
RUN_SPACING_S = 600.0
TRAIN_PERIOD_S = 0.1
FIRST_TRAIN_ID = 1_000_000_000  # real train IDs are ~1e9; run N starts at FIRST_TRAIN_ID + N * 100_000
SPECTRUM_BINS = 200


def proposal_dir(root: Path | str, proposal: int, *, instrument: str = "SPB", cycle: str = "202501") -> Path:
    """Where a proposal's ``raw/``, ``proc/`` and ``usr/`` folders live under ``root``."""
    return Path(root) / instrument / str(cycle) / f"p{int(proposal):06d}"


def _spectrometer_device():
    """A small processed-data source, defined here because extra-data has none this light."""
    from extra_data.tests.mockdata.base import DeviceBase

    class Spectrometer(DeviceBase):
        output_channels = ("output/data",)
        instrument_keys = [
            ("spectrum", "f4", (SPECTRUM_BINS,)),
            ("photonEnergy", "f4", (SPECTRUM_BINS,)),
        ]

    return Spectrometer(SPECTROMETER_ID)


MOTOR_KEYS = ("actualPosition", "targetPosition", "encoderPosition", "isOnTarget", "stepSize", "busy",
              "targetVelocity", "swLimitHigh", "swLimitLow")


def _motor_device():
    """extra-data's motor, cut down to the keys a context uses (its ~150 keys dominate write time)."""
    from extra_data.tests.mockdata.motor import Motor

    class SampleMotor(Motor):
        control_keys = [k for k in Motor.control_keys if k[0] in MOTOR_KEYS]

    return SampleMotor(MOTOR_ID)


def _write_with_extra_data(path: Path, devices, ntrains: int, first_train: int) -> None:
    from extra_data.tests.mockdata import write_file

    path.parent.mkdir(parents=True, exist_ok=True)
    # chunksize=ntrains: no padding rows after the last train.
    write_file(str(path), devices, ntrains, firsttrain=first_train, chunksize=ntrains,
               format_version="1.0")


def _fill_metadata(f: h5py.File, proposal: int, start_time: float, ntrains: int) -> np.ndarray:
    """Real train timestamps and proposal number; returns the timestamps in ns."""
    stamps = (np.uint64(round(start_time * 1e9))
              + np.arange(ntrains, dtype=np.uint64) * np.uint64(round(TRAIN_PERIOD_S * 1e9)))
    f["INDEX/timestamp"][:ntrains] = stamps
    f["METADATA/proposalNumber"][0] = proposal
    created = datetime.fromtimestamp(start_time, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ").encode()
    f["METADATA/creationDate"][0] = created
    f["METADATA/updateDate"][0] = created
    f["METADATA/runType"][0] = b"Mock run"
    return stamps


def _set_control(f: h5py.File, device: str, key: str, values, stamps: np.ndarray) -> None:
    """Fill one CONTROL key and its RUN (value at run start) counterpart."""
    values = np.asarray(values)
    n = len(stamps)
    f[f"CONTROL/{device}/{key}/value"][:n] = values
    f[f"CONTROL/{device}/{key}/timestamp"][:n] = stamps
    f[f"RUN/{device}/{key}/value"][0] = values[0]
    f[f"RUN/{device}/{key}/timestamp"][0] = stamps[0]


def _fill_xgm(f: h5py.File, run: int, rng: np.random.Generator, stamps: np.ndarray) -> np.ndarray:
    """XGM values; returns the per-train mean pulse energy (drives the camera brightness)."""
    n = len(stamps)
    mean_uj = 600.0 + 350.0 * np.sin(run * 0.7) + (25.0 * run) % 200  # varies run to run, always > 200
    shape = 20.0  # gamma shape: ~22% relative jitter per pulse, like SASE
    npulses = 10 + (run * 7) % 31
    pulses = rng.gamma(shape, mean_uj / shape, size=(n, npulses)).astype("f4")
    train_mean = pulses.mean(axis=1)

    out = f"INSTRUMENT/{XGM_ID}:output/data"
    intensity = np.zeros((n, 1000), dtype="f4")
    intensity[:, :npulses] = pulses
    f[f"{out}/intensityTD"][:n] = intensity
    aux = np.zeros_like(intensity)
    aux[:, :npulses] = pulses * rng.normal(1.0, 0.03, size=pulses.shape)
    f[f"{out}/intensityAUXTD"][:n] = aux
    for key, centre in (("xTD", 0.1 * np.cos(run)), ("yTD", -0.05 * np.sin(run))):
        pos = np.zeros_like(intensity)
        pos[:, :npulses] = rng.normal(centre, 0.02, size=pulses.shape)
        f[f"{out}/{key}"][:n] = pos
    f[f"{out}/intensitySigma/x_data"][:n] = intensity * 0.05
    f[f"{out}/intensitySigma/y_data"][:n] = intensity * 0.05

    dev = XGM_ID
    _set_control(f, dev, "pulseEnergy/photonFlux", train_mean, stamps)
    _set_control(f, dev, "pulseEnergy/nummberOfBunches", np.full(n, npulses, "f4"), stamps)
    wavelength = 0.133 + 0.002 * (run % 5)
    _set_control(f, dev, "pulseEnergy/wavelengthUsed", rng.normal(wavelength, 1e-5, n), stamps)
    _set_control(f, dev, "pulseEnergy/conversion", np.full(n, 0.00135), stamps)
    _set_control(f, dev, "pulseEnergy/temperature", rng.normal(296.0, 0.05, n), stamps)
    _set_control(f, dev, "pulseEnergy/pressure", rng.normal(5.2e-3, 1e-5, n), stamps)
    _set_control(f, dev, "beamPosition/ixPos", rng.normal(0.1 * np.cos(run), 0.01, n), stamps)
    _set_control(f, dev, "beamPosition/iyPos", rng.normal(-0.05 * np.sin(run), 0.01, n), stamps)
    for side in ("top", "bottom", "left", "right"):
        _set_control(f, dev, f"current/{side}/output", train_mean * 1e-9 * rng.normal(1, 0.02, n), stamps)
        _set_control(f, dev, f"current/{side}/rangeCode", np.full(n, 3, "i4"), stamps)
    _set_control(f, dev, "pressure/pressure1", rng.normal(5.2e-3, 2e-5, n), stamps)
    _set_control(f, dev, "pollingInterval", np.full(n, 100, "i4"), stamps)
    f[f"CONTROL/{dev}/state/timestamp"][:n] = stamps
    f[f"RUN/{dev}/state/value"][0] = b"OFF"
    return train_mean


def _fill_camera(f: h5py.File, run: int, rng: np.random.Generator, train_mean: np.ndarray) -> None:
    pixels = f[f"INSTRUMENT/{CAMERA_ID}:daqOutput/data/image/pixels"]
    n = len(train_mean)
    rows, cols = pixels.shape[1:]
    cy = rows * (0.3 + 0.4 * ((run * 0.37) % 1.0))
    cx = cols * (0.3 + 0.4 * ((run * 0.61) % 1.0))
    sigma = 2.0 + (run % 4)
    yy, xx = np.mgrid[0:rows, 0:cols]
    jitter = rng.normal(0.0, 0.5, size=(n, 2))
    # Spot shifts slightly per train and scales with the XGM energy of that train.
    images = np.empty((n, rows, cols))
    for i in range(n):
        s = np.exp(-((yy - cy - jitter[i, 0]) ** 2 + (xx - cx - jitter[i, 1]) ** 2) / (2 * sigma**2))
        images[i] = 100.0 + 4.0 * train_mean[i] * s
    images = rng.poisson(images).astype("u2")
    pixels[:n] = images
    img = f[f"INSTRUMENT/{CAMERA_ID}:daqOutput/data/image"]
    img["encoding"][:n] = 0
    img["binning"][:n] = 1


def _fill_motor(f: h5py.File, run: int, rng: np.random.Generator, stamps: np.ndarray) -> None:
    n = len(stamps)
    target = round(1.0 + 0.25 * run, 4)
    position = target + rng.normal(0.0, 2e-4, n)
    _set_control(f, MOTOR_ID, "targetPosition", np.full(n, target), stamps)
    _set_control(f, MOTOR_ID, "actualPosition", position, stamps)
    _set_control(f, MOTOR_ID, "encoderPosition", position + rng.normal(0.0, 5e-5, n), stamps)
    _set_control(f, MOTOR_ID, "isOnTarget", np.ones(n, "u1"), stamps)
    _set_control(f, MOTOR_ID, "stepSize", np.full(n, 0.25), stamps)
    _set_control(f, MOTOR_ID, "swLimitHigh", np.full(n, 50.0), stamps)
    _set_control(f, MOTOR_ID, "swLimitLow", np.full(n, -50.0), stamps)


def _fill_spectrometer(f: h5py.File, run: int, rng: np.random.Generator, train_mean: np.ndarray) -> None:
    out = f"INSTRUMENT/{SPECTROMETER_ID}:output/data"
    n = len(train_mean)
    energy = np.linspace(9200.0, 9400.0, SPECTRUM_BINS, dtype="f4")
    peak = 9300.0 + 40.0 * np.sin(run * 0.9)
    profile = np.exp(-((energy - peak) ** 2) / (2 * 8.0**2))
    spectra = train_mean[:, None] * profile[None, :] * rng.normal(1.0, 0.05, (n, SPECTRUM_BINS))
    f[f"{out}/spectrum"][:n] = (spectra + rng.normal(0.0, 2.0, spectra.shape)).astype("f4")
    f[f"{out}/photonEnergy"][:n] = np.broadcast_to(energy, (n, SPECTRUM_BINS))


def make_run(
    root: Path | str,
    proposal: int,
    run: int,
    *,
    ntrains: int = 50,
    instrument: str = "SPB",
    cycle: str = "202501",
    with_proc: bool = False,
    seed: int | None = None,
    start_time: float | None = None,
    camera_shape: tuple[int, int] = (64, 48),
) -> Path:
    """Write one run; returns its raw run directory (``.../raw/r<NNNN>``).

    ``start_time`` (UTC epoch seconds) is the first train's timestamp; by default runs are spaced
    ``RUN_SPACING_S`` apart from ``BASE_START_TIME``. Existing files of the same run are overwritten.
    """
    from extra_data.tests.mockdata.basler_camera import BaslerCamera
    from extra_data.tests.mockdata.xgm import XGM

    if ntrains < 1:
        raise ValueError(f"ntrains must be >= 1, got {ntrains}")
    if not 0 < run < 10000:
        raise ValueError(f"run must be between 1 and 9999, got {run}")
    if start_time is None:
        start_time = BASE_START_TIME + (run - 1) * RUN_SPACING_S
    rng = np.random.default_rng(seed if seed is not None else [int(proposal), int(run)])
    first_train = FIRST_TRAIN_ID + run * 100_000
    pdir = proposal_dir(root, proposal, instrument=instrument, cycle=cycle)

    raw_path = pdir / "raw" / f"r{run:04d}" / f"RAW-R{run:04d}-DA01-S00000.h5"
    devices = [XGM(XGM_ID), BaslerCamera(CAMERA_ID, sensor_size=tuple(camera_shape)), _motor_device()]
    _write_with_extra_data(raw_path, devices, ntrains, first_train)
    with h5py.File(raw_path, "r+") as f:
        stamps = _fill_metadata(f, proposal, start_time, ntrains)
        train_mean = _fill_xgm(f, run, rng, stamps)
        _fill_camera(f, run, rng, train_mean)
        _fill_motor(f, run, rng, stamps)

    if with_proc:
        proc_path = pdir / "proc" / f"r{run:04d}" / f"CORR-R{run:04d}-DA01-S00000.h5"
        _write_with_extra_data(proc_path, [_spectrometer_device()], ntrains, first_train)
        with h5py.File(proc_path, "r+") as f:
            _fill_metadata(f, proposal, start_time, ntrains)
            _fill_spectrometer(f, run, rng, train_mean)
    return raw_path.parent


def make_proposal(root: Path | str, proposal: int, runs: Iterable[int], **kw) -> Path:
    """Write several runs of one proposal (keywords as for ``make_run``); returns the proposal dir."""
    for run in runs:
        make_run(root, proposal, run, **kw)
    return proposal_dir(root, proposal, instrument=kw.get("instrument", "SPB"),
                        cycle=kw.get("cycle", "202501"))


def _parse_runs(specs: list[str]) -> list[int]:
    runs: list[int] = []
    for spec in specs:
        first, _, last = spec.partition("-")
        try:
            runs.extend(range(int(first), int(last or first) + 1))
        except ValueError:
            raise SystemExit(f"error: bad run number or range {spec!r} (use e.g. 3 or 1-10)") from None
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backend.base.mockruns",
        description="Write mock European XFEL runs with plausible data under ROOT "
                    "(then set EXTRA_DATA_DATA_ROOT=ROOT).")
    parser.add_argument("root", type=Path)
    parser.add_argument("proposal", type=int)
    parser.add_argument("runs", nargs="+", help="run numbers or ranges, e.g. 1 2 5-10")
    parser.add_argument("--ntrains", type=int, default=50)
    parser.add_argument("--instrument", default="SPB")
    parser.add_argument("--cycle", default="202501")
    parser.add_argument("--proc", action="store_true", help="also write proc (CORR) files")
    args = parser.parse_args(argv)
    pdir = make_proposal(args.root, args.proposal, _parse_runs(args.runs), ntrains=args.ntrains,
                         instrument=args.instrument, cycle=args.cycle, with_proc=args.proc)
    print(f"proposal directory: {pdir}")
    print(f"export EXTRA_DATA_DATA_ROOT={Path(args.root).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
