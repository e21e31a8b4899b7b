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

``make_instrument_run(root, proposal, run, "SPB")`` instead writes the sources a run at one of European
XFEL's instruments (SPB, FXE, MID, HED, SCS, SQS) really has, under their real names (``INSTRUMENTS``
lists them): XGMs, the bunch pattern timeserver, undulator or monochromator energy, attenuators, the
big 2-D detector's modules (AGIPD, LPD, DSSC: raw ``DET/<m>CH0:xtdf`` and corrected
``CORR/<m>CH0:output``), JUNGFRAU and ePix modules, ADQ digitizers, cameras and motors. The context
templates in ``contexts/`` are tested against these runs.

Runs start at ``BASE_START_TIME + (run - 1) * RUN_SPACING_S`` unless ``start_time`` is given, trains are
100 ms apart, and ``run.train_timestamps()`` returns those times, so DAMNIT's ``start_time`` is
meaningful and increases with the run number. Values are reproducible: the random seed defaults to a
function of (proposal, run).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from backend.base.runs import RunSpecError, parse_run_spec

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


# ------------------------------------------------------------------------------ instrument runs

@dataclass(frozen=True)
class InstrumentSetup:
    """The sources ``make_instrument_run`` writes for one instrument, named as in its real runs."""

    sase: int
    xgms: tuple[str, ...]                 # control sources; each also has ``<xgm>:output``
    timeserver: str | None = None         # bunch pattern: control + ``:outputBunchPattern``
    undulator: str | None = None          # ``actualPosition`` [keV]
    mono: str | None = None               # ``actualEnergy`` [eV]
    attenuators: tuple[str, ...] = ()     # ``actual.transmission``
    xtdf: tuple[str, str] | None = None   # (detector name, "AGIPD" | "LPD" | "DSSC")
    xtdf_control: str | None = None       # detector settings (FPGA_COMP)
    jungfraus: tuple[str, ...] = ()       # JUNGFRAU modules, ``<source>:daqOutput``
    epix: str | None = None               # ePix10k, ``<source>:daqOutput``
    digitizer: str | None = None          # ADQ: control + ``<source>:network``
    digitizer_channels: tuple[str, ...] = ()
    cameras: tuple[str, ...] = ()         # ``<source>:daqOutput`` ``data.image.pixels``
    motors: tuple[str, ...] = ()          # ``actualPosition`` / ``encoderPosition`` [mm]
    magnet: str | None = None             # ``actualCurrent`` [A]
    photon_energy_kev: float = 9.3


# Source names from European XFEL's public data documentation and analysis code (extra-data, EXtra,
# EXtra-foam configurations, published context files).
INSTRUMENTS: dict[str, InstrumentSetup] = {
    "SPB": InstrumentSetup(
        sase=1, xgms=("SA1_XTD2_XGM/XGM/DOOCS", "SPB_XTD9_XGM/XGM/DOOCS"),
        timeserver="SPB_RR_SYS/TSYS/TIMESERVER", undulator="SPB_XTD2_UND/DOOCS/ENERGY",
        attenuators=("SA1_XTD2_ATT/MDL/MAIN", "SPB_XTD9_ATT/MDL/MAIN"),
        xtdf=("SPB_DET_AGIPD1M-1", "AGIPD"), xtdf_control="SPB_IRU_AGIPD1M1/MDL/FPGA_COMP",
        cameras=("SPB_IRU_INLINEMIC/CAM/CAM",), motors=("SPB_IRU_AGIPD1M/MOTOR/Z_STEPPER",),
        photon_energy_kev=9.3),
    "FXE": InstrumentSetup(
        sase=1, xgms=("SA1_XTD2_XGM/XGM/DOOCS",), xtdf=("FXE_DET_LPD1M-1", "LPD"),
        jungfraus=("FXE_XAD_JF1M/DET/RECEIVER-1", "FXE_XAD_JF1M/DET/RECEIVER-2"),
        cameras=("FXE_XAD_GEC/CAM/CAMERA",),
        motors=("FXE_SMS_USR/MOTOR/UM01", "FXE_SMS_USR/MOTOR/UM02", "FXE_AUXT_LIC/DOOCS/PPODL"),
        photon_energy_kev=9.0),
    "MID": InstrumentSetup(
        sase=2, xgms=("SA2_XTD1_XGM/XGM/DOOCS",), timeserver="MID_RR_UTC/TSYS/TIMESERVER",
        undulator="MID_XTD1_UND/DOOCS/ENERGY", attenuators=("SA2_XTD1_ATT/MDL/MAIN",),
        xtdf=("MID_DET_AGIPD1M-1", "AGIPD"), xtdf_control="MID_EXP_AGIPD1M1/MDL/FPGA_COMP",
        jungfraus=("MID_EXP_JF500K1/DET/JNGFR01",), cameras=("MID_EXP_SAM/CAM/CAM1",),
        motors=("MID_EXP_SAM/MOTOR/BSTX", "MID_EXP_SAM/MOTOR/BSTY"), photon_energy_kev=9.04),
    "HED": InstrumentSetup(
        sase=2, xgms=("SA2_XTD1_XGM/XGM/DOOCS", "HED_XTD6_XGM/XGM/DOOCS"),
        timeserver="HED_RR_SYS/TSYS/TIMESERVER", jungfraus=("HED_IA1_JF500K1/DET/JNGFR01",),
        epix="HED_IA1_EPIX10K-1/DET/RECEIVER", cameras=("HED_OPT_PAM/CAM/SAMPLE_CAM_4",),
        photon_energy_kev=8.2),
    "SCS": InstrumentSetup(
        sase=3, xgms=("SA3_XTD10_XGM/XGM/DOOCS", "SCS_BLU_XGM/XGM/DOOCS"),
        mono="SA3_XTD10_MONO/MDL/PHOTON_ENERGY", xtdf=("SCS_DET_DSSC1M-1", "DSSC"),
        digitizer="SCS_UTC1_ADQ/ADC/1", digitizer_channels=("1_A", "1_B", "1_C", "1_D"),
        motors=("SCS_ILH_LAS/MOTOR/LT3",), magnet="SCS_CDIFFT_MAG/SUPPLY/CURRENT",
        photon_energy_kev=0.78),
    "SQS": InstrumentSetup(
        sase=3, xgms=("SA3_XTD10_XGM/XGM/DOOCS", "SQS_DIAG1_XGMD/XGM/DOOCS"),
        timeserver="SQS_RR_UTC/TSYS/TIMESERVER", mono="SA3_XTD10_MONO/MDL/PHOTON_ENERGY",
        digitizer="SQS_DIGITIZER_UTC1/ADC/1", digitizer_channels=("1_A", "1_B"),
        photon_energy_kev=1.0),
}

# Bunch pattern bits (European XFEL timing system): where each bunch goes.
DESTINATION_SHIFT = 18
DESTINATION_T4D = 4 << DESTINATION_SHIFT  # SASE1/SASE3 dump
DESTINATION_T5D = 2 << DESTINATION_SHIFT  # SASE2 dump
PHOTON_LINE_DEFLECTION = 1 << 27          # soft kick into SASE3
BUNCH_TABLE_SIZE = 2700
DIGITIZER_SAMPLES = 20_000
PULSE_SPACING = 4  # bunch pattern slots between pulses (4 x 222 ns: 1.1 MHz)


def _device(control=(), instrument=(), channels=(), run_values=()):
    """A mock device class with the given keys (extra-data's DeviceBase fills the layout)."""
    from extra_data.tests.mockdata.base import DeviceBase

    return type("MockDevice", (DeviceBase,), {
        "control_keys": list(control), "instrument_keys": list(instrument),
        "output_channels": tuple(channels), "extra_run_values": list(run_values)})


def _xgm_device(source: str, sase: int):
    from extra_data.tests.mockdata.xgm import XGM

    extra_ctrl = [("pulseEnergy/numberOfBunchesActual", "f4", ())]
    extra_inst = []
    if sase in (1, 3):  # the XGMs on the SASE1/SASE3 branch see both SASEs' pulses
        extra_ctrl += [(f"pulseEnergy/numberOfSa{s}BunchesActual", "f4", ()) for s in (1, 3)]
        extra_inst += [(f"intensitySa{s}TD", "f4", (1000,)) for s in (1, 3)]
    cls = type("InstrumentXGM", (XGM,), {"control_keys": XGM.control_keys + extra_ctrl,
                                         "instrument_keys": XGM.instrument_keys + extra_inst})
    return cls(source)


def _xtdf_modules(name: str, kind: str, modules, frames: int, raw: bool):
    from extra_data.tests.mockdata.detectors import AGIPDModule, DSSCModule, LPDModule

    cls = {"AGIPD": AGIPDModule, "LPD": LPDModule, "DSSC": DSSCModule}[kind]
    if raw:
        return [cls(f"{name}/DET/{m}CH0", frames_per_train=frames) for m in modules]
    return [cls(f"{name}/CORR/{m}CH0", frames_per_train=frames, raw=False, channel_name="output")
            for m in modules]


def _instrument_devices(setup: InstrumentSetup, frames: int):
    """Devices of the raw "DA" file (everything but the detector modules)."""
    from extra_data.tests.mockdata.basler_camera import BaslerCamera
    from extra_data.tests.mockdata.gec_camera import GECCamera

    devices = [_xgm_device(x, setup.sase) for x in setup.xgms]
    if setup.timeserver:
        devices.append(_device(control=[("bunchPatternTable", "u4", (BUNCH_TABLE_SIZE,))],
                               instrument=[("bunchPatternTable", "u4", (BUNCH_TABLE_SIZE,))],
                               channels=("outputBunchPattern/data",),
                               run_values=[("classId", None, "TimeServer")])(setup.timeserver))
    if setup.undulator:
        devices.append(_device(control=[("actualPosition", "f4", ())])(setup.undulator))
    if setup.mono:
        devices.append(_device(control=[("actualEnergy", "f4", ())])(setup.mono))
    for att in setup.attenuators:
        devices.append(_device(control=[("actual/transmission", "f8", ())])(att))
    if setup.xtdf_control:
        devices.append(_device(control=[
            ("bunchStructure/nPulses", "i4", ()), ("bunchStructure/repetitionRate", "f8", ()),
            ("integrationTime", "i4", ()), ("gainModeIndex", "i4", ())])(setup.xtdf_control))
    for jf in setup.jungfraus:
        devices.append(_device(instrument=[
            ("adc", "u2", (1, 512, 1024)), ("gain", "u1", (1, 512, 1024)), ("memoryCell", "u1", (1,)),
            ("frameNumber", "u8", (1,))], channels=("daqOutput/data",))(jf))
    if setup.epix:
        devices.append(_device(instrument=[("image/pixels", "u2", (352, 384))],
                               channels=("daqOutput/data",))(setup.epix))
    if setup.digitizer:
        inst = []
        for ch in setup.digitizer_channels:
            inst += [(f"channel_{ch}/raw/samples", "i2", (DIGITIZER_SAMPLES,)),
                     (f"channel_{ch}/apd/pulseIntegral", "f4", (1000,))]
        devices.append(_device(control=[("board1/sampleRate", "f8", ())], instrument=inst,
                               channels=("network/digitizers",),
                               run_values=[("classId", None, "AdqDigitizer"),
                                           ("board1/interleavedMode", None, 0)])(setup.digitizer))
    for cam in setup.cameras:
        devices.append(GECCamera(cam) if "_GEC/" in cam else BaslerCamera(cam, sensor_size=(60, 80)))
    for motor in setup.motors:
        devices.append(_device(control=[("actualPosition", "f8", ()), ("encoderPosition", "f8", ())])(motor))
    if setup.magnet:
        devices.append(_device(control=[("actualCurrent", "f4", ())])(setup.magnet))
    return devices


def pulses_per_train(run: int) -> int:
    """X-ray pulses per train in the instrument runs of this run number."""
    return 5 + (run * 3) % 20


def photon_energy_kev(instrument: str, run: int) -> float:
    """The photon energy an instrument run records (undulator, monochromator, XGM wavelength)."""
    return INSTRUMENTS[instrument].photon_energy_kev * (1 + 0.002 * (run % 5))


def signal_trains(proposal: int, run: int, ntrains: int, seed: int | None = None) -> np.ndarray:
    """Which trains of an instrument run have signal on the detectors (bool per train); the first
    always does, about one in three of the others is a miss."""
    rng = np.random.default_rng(seed if seed is not None else [int(proposal), int(run), 7])
    hits = rng.random(ntrains) > 0.33
    hits[0] = True
    return hits


def _pulse_pattern(setup: InstrumentSetup, run: int) -> tuple[int, np.ndarray]:
    """(pulses per train for the instrument's SASE, one train's bunch pattern table)."""
    npulses = pulses_per_train(run)
    table = np.zeros(BUNCH_TABLE_SIZE, dtype=np.uint32)
    ids = 1000 + PULSE_SPACING * np.arange(npulses)
    if setup.sase == 2:
        table[ids] |= DESTINATION_T5D
    elif setup.sase == 1:
        table[ids] |= DESTINATION_T4D
        table[200] |= DESTINATION_T4D | PHOTON_LINE_DEFLECTION  # one SASE3 pulse, as is common
    else:
        table[ids] |= DESTINATION_T4D | PHOTON_LINE_DEFLECTION
        table[1600:1600 + 4 * PULSE_SPACING:PULSE_SPACING] |= DESTINATION_T4D  # SASE1 pulses too
    return npulses, table


def _fill_instrument(f: h5py.File, instrument: str, run: int, rng: np.random.Generator,
                     stamps: np.ndarray, hits: np.ndarray) -> None:
    """Non-zero, run-dependent values for every source of the raw "DA" file."""
    setup = INSTRUMENTS[instrument]
    n = len(stamps)
    npulses, table = _pulse_pattern(setup, run)
    energy_kev = photon_energy_kev(instrument, run)
    mean_uj = 400.0 + 300.0 * abs(np.sin(run * 0.7))
    for i, xgm in enumerate(setup.xgms):
        pulses = rng.gamma(20.0, mean_uj * (1 - 0.15 * i) / 20.0, size=(n, npulses)).astype("f4")
        td = np.ones((n, 1000), dtype="f4")  # XGMs leave unused pulse slots at 1
        td[:, :npulses] = pulses
        out = f"INSTRUMENT/{xgm}:output/data"
        f[f"{out}/intensityTD"][:n] = td
        f[f"{out}/intensityAUXTD"][:n] = td
        for key in ("xTD", "yTD"):
            f[f"{out}/{key}"][:n] = rng.normal(0.0, 0.05, size=(n, 1000))
        _set_control(f, xgm, "pulseEnergy/numberOfBunchesActual", np.full(n, npulses, "f4"), stamps)
        _set_control(f, xgm, "pulseEnergy/nummberOfBunches", np.full(n, npulses, "f4"), stamps)
        if f"{out}/intensitySa1TD" in f:
            own, other = (1, 3) if setup.sase == 1 else (3, 1)
            f[f"{out}/intensitySa{own}TD"][:n] = td
            f[f"{out}/intensitySa{other}TD"][:n] = np.ones((n, 1000), dtype="f4")
            _set_control(f, xgm, f"pulseEnergy/numberOfSa{own}BunchesActual", np.full(n, npulses, "f4"),
                         stamps)
            _set_control(f, xgm, f"pulseEnergy/numberOfSa{other}BunchesActual", np.zeros(n, "f4"), stamps)
        _set_control(f, xgm, "pulseEnergy/photonFlux", pulses.mean(axis=1), stamps)
        _set_control(f, xgm, "pulseEnergy/wavelengthUsed", np.full(n, 1.23984198 / energy_kev, "f4"), stamps)
        for key in ("beamPosition/ixPos", "beamPosition/iyPos"):
            _set_control(f, xgm, key, rng.normal(0.0, 0.02, n), stamps)
    if setup.timeserver:
        tables = np.broadcast_to(table, (n, BUNCH_TABLE_SIZE))
        f[f"INSTRUMENT/{setup.timeserver}:outputBunchPattern/data/bunchPatternTable"][:n] = tables
        _set_control(f, setup.timeserver, "bunchPatternTable", tables, stamps)
    if setup.undulator:
        _set_control(f, setup.undulator, "actualPosition", np.full(n, energy_kev, "f4"), stamps)
    if setup.mono:
        _set_control(f, setup.mono, "actualEnergy", rng.normal(energy_kev * 1000, 0.05, n), stamps)
    for i, att in enumerate(setup.attenuators):
        _set_control(f, att, "actual/transmission", np.full(n, 0.5 ** ((run + i) % 4)), stamps)
    if setup.xtdf_control:
        dev = setup.xtdf_control
        _set_control(f, dev, "bunchStructure/nPulses", np.full(n, 352, "i4"), stamps)
        _set_control(f, dev, "bunchStructure/repetitionRate", np.full(n, 1.1), stamps)
        _set_control(f, dev, "integrationTime", np.full(n, 12, "i4"), stamps)
        _set_control(f, dev, "gainModeIndex", np.full(n, run % 3, "i4"), stamps)
    for jf in setup.jungfraus:
        out = f"INSTRUMENT/{jf}:daqOutput/data"
        f[f"{out}/adc"][:n] = (rng.normal(3000, 15, (n, 1, 512, 1024))
                               + _rings((512, 1024), run)[None, None] * 300 * hits[:, None, None, None]
                               ).astype("u2")
        f[f"{out}/frameNumber"][:n] = np.arange(n)[:, None] + 1
    if setup.epix:
        f[f"INSTRUMENT/{setup.epix}:daqOutput/data/image/pixels"][:n] = (
            rng.normal(1500, 10, (n, 352, 384)) + _rings((352, 384), run)[None] * 30 * hits[:, None, None]
        ).astype("u2")
    if setup.digitizer:
        _fill_digitizer(f, setup, npulses, rng, hits)
    for cam in setup.cameras:
        pixels = f[f"INSTRUMENT/{cam}:daqOutput/data/image/pixels"]
        shape = pixels.shape[1:]
        pixels[:n] = rng.poisson(50 + 500 * _spot(shape, run)[None] * (0.5 + hits[:, None, None])).astype("u2")
    for i, motor in enumerate(setup.motors):
        position = round(-2.0 + 0.5 * run + i, 4) + rng.normal(0.0, 1e-4, n)
        _set_control(f, motor, "actualPosition", position, stamps)
        _set_control(f, motor, "encoderPosition", position + rng.normal(0.0, 5e-5, n), stamps)
    if setup.magnet:
        _set_control(f, setup.magnet, "actualCurrent", np.full(n, 10.0 * ((-1) ** run), "f4"), stamps)


def _rings(shape: tuple[int, int], run: int) -> np.ndarray:
    """A diffraction-like ring pattern whose radius moves with the run (0..1 intensity)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    r = np.hypot(yy - shape[0] / 2, xx - shape[1] / 2)
    radius = min(shape) * (0.2 + 0.05 * (run % 4))
    return np.exp(-((r - radius) ** 2) / (2 * 4.0**2))


def _spot(shape: tuple[int, int], run: int) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    cy, cx = shape[0] * (0.3 + 0.4 * ((run * 0.37) % 1)), shape[1] * (0.3 + 0.4 * ((run * 0.61) % 1))
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0**2))


def _fill_digitizer(f, setup: InstrumentSetup, npulses: int, rng, hits) -> None:
    """Negative-going peaks (MCP/ToF signals) every pulse on a noisy baseline, per channel."""
    n = len(hits)
    grp = f"INSTRUMENT/{setup.digitizer}:network/digitizers"
    t = np.arange(DIGITIZER_SAMPLES)
    for c, ch in enumerate(setup.digitizer_channels):
        trace = np.zeros(DIGITIZER_SAMPLES)
        starts = 2000 + 440 * np.arange(npulses)  # the ADQ samples 440 times per 4.5 MHz bunch slot
        for s in starts[starts < DIGITIZER_SAMPLES - 200]:
            trace -= 800.0 / (c + 1) * np.exp(-((t - s - 40 - 15 * c) ** 2) / (2 * 6.0**2))
        traces = rng.normal(-10 * (c + 1), 3.0, (n, DIGITIZER_SAMPLES)) + trace[None] * (0.3 + hits[:, None])
        f[f"{grp}/channel_{ch}/raw/samples"][:n] = traces.astype("i2")
        integrals = np.zeros((n, 1000), dtype="f4")
        integrals[:, :npulses] = rng.gamma(10.0, 2000.0 / (c + 1) / 10.0, (n, npulses)) * (0.3 + hits[:, None])
        f[f"{grp}/channel_{ch}/apd/pulseIntegral"][:n] = integrals
    f[f"CONTROL/{setup.digitizer}/board1/sampleRate/value"][:n] = 2e9


def _fill_xtdf(f: h5py.File, name: str, kind: str, module: int, run: int, raw: bool, rng,
               hits: np.ndarray) -> None:
    """Detector module data: raw ADU over a pedestal, or corrected photon counts with rings."""
    source = f"{name}/DET/{module}CH0:xtdf" if raw else f"{name}/CORR/{module}CH0:output"
    ds = f[f"INSTRUMENT/{source}/image/data"]
    frames = ds.shape[0]
    signal = np.repeat(hits, frames // len(hits))
    image_shape = ds.shape[-2:]
    pattern = _rings(image_shape, run + module)
    if raw:
        adu = rng.normal(5000.0, 20.0, (frames, *image_shape)) + 300.0 * pattern[None] * signal[:, None, None]
        if kind == "AGIPD":  # raw AGIPD frames hold (ADU, gain level)
            data = np.stack([adu, np.full_like(adu, 4500.0)], axis=1)
        else:
            data = adu[:, None]
        ds[:] = data.astype("u2")
    else:
        ds[:] = rng.poisson(0.05 + 3.0 * pattern[None] * signal[:, None, None]).astype("f4")


def make_instrument_run(root: Path | str, proposal: int, run: int, instrument: str, *, ntrains: int = 10,
                        frames_per_train: int = 2, modules: Iterable[int] = range(4), with_proc: bool = True,
                        cycle: str = "202501", seed: int | None = None, start_time: float | None = None
                        ) -> Path:
    """Write one run with the sources of ``instrument`` (a key of ``INSTRUMENTS``); returns its raw folder.

    The big detector gets ``modules`` (a quarter of it by default, to keep files small) with
    ``frames_per_train`` frames, in per-module files as the DAQ writes them; ``with_proc`` adds its
    corrected data. Detectors see signal in the trains ``signal_trains()`` names and only noise in
    the others, so hit finding has work to do.
    """
    if instrument not in INSTRUMENTS:
        raise ValueError(f"unknown instrument {instrument!r}: choose one of {', '.join(INSTRUMENTS)}")
    if ntrains < 1:
        raise ValueError(f"ntrains must be >= 1, got {ntrains}")
    if not 0 < run < 10000:
        raise ValueError(f"run must be between 1 and 9999, got {run}")
    setup = INSTRUMENTS[instrument]
    if start_time is None:
        start_time = BASE_START_TIME + (run - 1) * RUN_SPACING_S
    hits = signal_trains(proposal, run, ntrains, seed).astype(float)
    rng = np.random.default_rng(seed + 1 if seed is not None else [int(proposal), int(run), 8])
    first_train = FIRST_TRAIN_ID + run * 100_000
    pdir = proposal_dir(root, proposal, instrument=instrument, cycle=cycle)
    raw_dir = pdir / "raw" / f"r{run:04d}"

    da_path = raw_dir / f"RAW-R{run:04d}-DA01-S00000.h5"
    _write_with_extra_data(da_path, _instrument_devices(setup, frames_per_train), ntrains, first_train)
    with h5py.File(da_path, "r+") as f:
        stamps = _fill_metadata(f, proposal, start_time, ntrains)
        _fill_instrument(f, instrument, run, rng, stamps, hits)

    if setup.xtdf:
        name, kind = setup.xtdf
        for raw in (True, False) if with_proc else (True,):
            prefix, folder = ("RAW", "raw") if raw else ("CORR", "proc")
            for m in modules:
                path = pdir / folder / f"r{run:04d}" / f"{prefix}-R{run:04d}-{kind}{m:02d}-S00000.h5"
                _write_with_extra_data(path, _xtdf_modules(name, kind, [m], frames_per_train, raw),
                                       ntrains, first_train)
                with h5py.File(path, "r+") as f:
                    _fill_metadata(f, proposal, start_time, ntrains)
                    _fill_xtdf(f, name, kind, m, run, raw, rng, hits)
    return raw_dir


def _parse_runs(specs: list[str]) -> list[int]:
    try:
        runs = parse_run_spec(specs)
    except RunSpecError as e:
        raise SystemExit(f"error: {e}") from None
    if runs is None:
        raise SystemExit("error: give the runs to write (e.g. 3 or 1-10), not 'all'")
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
    parser.add_argument("--instrument-sources", action="store_true",
                        help=f"write the instrument's real sources (one of {', '.join(INSTRUMENTS)}) instead "
                             "of the demo set")
    args = parser.parse_args(argv)
    runs = _parse_runs(args.runs)
    if args.instrument_sources:
        if args.instrument not in INSTRUMENTS:
            parser.error(f"--instrument-sources needs --instrument {'|'.join(INSTRUMENTS)}, not {args.instrument!r}")
        for run in runs:
            make_instrument_run(args.root, args.proposal, run, args.instrument, ntrains=args.ntrains,
                                with_proc=args.proc, cycle=args.cycle)
        pdir = proposal_dir(args.root, args.proposal, instrument=args.instrument, cycle=args.cycle)
    else:
        pdir = make_proposal(args.root, args.proposal, runs, ntrains=args.ntrains,
                             instrument=args.instrument, cycle=args.cycle, with_proc=args.proc)
    print(f"proposal directory: {pdir}")
    print(f"export EXTRA_DATA_DATA_ROOT={Path(args.root).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
