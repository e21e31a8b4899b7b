# ruff: noqa: F821  (DAMNIT annotations like "mymdc#sample_name" are strings, not Python names)
"""Starting context for SCS (SASE3): beam, DSSC 1M, the fast ADQ digitizer, laser delay and magnet.

    damnit init 2468 --context contexts/scs.py

Sources (as SCS records them): the XGM in front of the instrument ``SCS_BLU_XGM/XGM/DOOCS``, the
monochromator ``SA3_XTD10_MONO/MDL/PHOTON_ENERGY``, the DSSC 1M ``SCS_DET_DSSC1M-1``
(``DET/<m>CH0:xtdf``), the ADQ digitizer ``SCS_UTC1_ADQ/ADC/1`` (``network``:
``digitizers.channel_<board>_<letter>.raw.samples`` and ``.apd.pulseIntegral``, the peaks the
digitizer integrates itself), the laser delay line ``SCS_ILH_LAS/MOTOR/LT3`` and the magnet supply
``SCS_CDIFFT_MAG/SUPPLY/CURRENT``. Change a name or the digitizer channel here if your setup differs;
a variable whose source is missing from a run is skipped with the reason.
"""

import numpy as np
import xarray as xr
from damnit_ctx import Skip, Variable
from extra_data import by_index
from extra_data.components import DSSC1M

XGM = "SCS_BLU_XGM/XGM/DOOCS"
MONO = "SA3_XTD10_MONO/MDL/PHOTON_ENERGY"
DSSC = "SCS_DET_DSSC1M-1"
DIGITIZER = "SCS_UTC1_ADQ/ADC/1:network"
CHANNEL = "1_D"  # the digitizer channel your detector (e.g. an MCP) is connected to
LASER_DELAY = "SCS_ILH_LAS/MOTOR/LT3"
MAGNET = "SCS_CDIFFT_MAG/SUPPLY/CURRENT"

MEAN_TRAINS, MEAN_FRAMES = 5, 16  # the mean DSSC image uses this many trains x frames per train
TRACE_TRAINS, BASELINE = 50, 1000  # trains averaged for the mean trace; samples before the signal


def _require(run, *sources):
    missing = [s for s in sources if s not in run.all_sources]
    if missing:
        raise Skip(f"not in this run: {', '.join(missing)}")


def _sase3_pulses(run, xgm: str) -> int:
    _require(run, xgm)
    return int(run[xgm, "pulseEnergy.numberOfSa3BunchesActual"].ndarray().max())


def _sase3_energy(run, xgm: str):
    """Mean SASE3 pulse energy per train at ``xgm``."""
    _require(run, f"{xgm}:output")
    n_pulses = _sase3_pulses(run, xgm)
    if n_pulses == 0:
        raise Skip(f"{xgm} saw no SASE3 pulses")
    energy = run[f"{xgm}:output", "data.intensitySa3TD"].xarray(roi=np.s_[:n_pulses])
    return energy.mean(energy.dims[1])


def _mean_trace(run, channel: str):
    """Mean raw trace of a digitizer channel over the first trains, baseline removed and inverted
    (detector pulses are negative-going), against the sample number."""
    _require(run, DIGITIZER)
    samples = run[DIGITIZER, f"digitizers.channel_{channel}.raw.samples"].select_trains(np.s_[:TRACE_TRAINS])
    trace = samples.ndarray().mean(axis=0)
    return xr.DataArray(trace[:BASELINE].mean() - trace, dims=["sample"])


# -- Run ---------------------------------------------------------------------------------------


@Variable(title="Trains")
def n_trains(run):
    """Number of trains recorded in the run."""
    return len(run.train_ids)


@Variable(title="Sample")
def sample_name(run, name: "mymdc#sample_name"):
    """The sample set for this run in myMdC."""
    return name


@Variable(title="Run type")
def run_type(run, kind: "mymdc#run_type"):
    """The run type set in myMdC (e.g. dark, calibration, sample)."""
    return kind


# -- Beam --------------------------------------------------------------------------------------


@Variable(title="Beam/Pulse energy", units="uJ", summary="mean")
def pulse_energy(run):
    """Mean SASE3 pulse energy per train at the instrument's XGM."""
    return _sase3_energy(run, XGM)


@Variable(title="Beam/Pulses", summary="mean")
def pulses(run):
    """SASE3 pulses per train counted by the XGM."""
    _require(run, XGM)
    return run[XGM, "pulseEnergy.numberOfSa3BunchesActual"].xarray()


@Variable(title="Beam/Photon energy", units="eV")
def photon_energy(run):
    """Monochromator photon energy (mean over the run)."""
    _require(run, MONO)
    return float(run[MONO, "actualEnergy"].ndarray().mean())


# -- DSSC --------------------------------------------------------------------------------------


def _dssc(run) -> DSSC1M:
    if not any(s.startswith(f"{DSSC}/DET/") for s in run.instrument_sources):
        raise Skip(f"no {DSSC} data in this run")
    return DSSC1M(run, detector_name=DSSC, raw=True)


@Variable(title="DSSC/Frames per train")
def dssc_frames(run):
    """Most frames the DSSC recorded in one train."""
    return int(_dssc(run).frame_counts.max())


def _module_mosaic(per_module: xr.DataArray, n_modules: int, per_row: int = 4) -> np.ndarray:
    """Module images (module, y, x) side by side in module order, ``per_row`` to a row; modules not
    recorded are NaN. No geometry: assemble with extra_geom for a true picture."""
    h, w = per_module.shape[1:]
    rows = -(-n_modules // per_row)
    out = np.full((rows * h, per_row * w), np.nan, dtype=np.float32)
    for module, image in zip(per_module.coords["module"].values, per_module.values):
        r, c = divmod(int(module), per_row)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = image
    return out


@Variable(title="DSSC/Mean image")
def dssc_mean_image(run):
    """Mean raw image of the first trains and frames (dark not subtracted), modules 4 to a row."""
    det = _dssc(run.select_trains(np.s_[:MEAN_TRAINS]))
    frames = det.get_array("image.data", pulses=by_index[:MEAN_FRAMES])
    return _module_mosaic(frames.mean(["train", "pulse"]), det.n_modules)


# -- Digitizer ---------------------------------------------------------------------------------


@Variable(title="Digitizer/Mean trace")
def digitizer_trace(run):
    """Mean trace of the digitizer channel over the first trains (baseline removed, inverted)."""
    return _mean_trace(run, CHANNEL)


@Variable(title="Digitizer/Pulse integral", summary="mean")
def digitizer_signal(run):
    """Mean of the digitizer's own pulse integrals over the SASE3 pulses of each train."""
    _require(run, DIGITIZER)
    n_pulses = _sase3_pulses(run, XGM)
    if n_pulses == 0:
        raise Skip("no SASE3 pulses")
    integrals = run[DIGITIZER, f"digitizers.channel_{CHANNEL}.apd.pulseIntegral"].xarray(roi=np.s_[:n_pulses])
    return integrals.mean(integrals.dims[1])


# -- Pump-probe and field ----------------------------------------------------------------------


@Variable(title="Laser/Delay line", units="mm", summary="mean")
def laser_delay(run):
    """Position of the pump laser's delay line per train."""
    _require(run, LASER_DELAY)
    return run[LASER_DELAY, "actualPosition"].xarray()


@Variable(title="Sample/Magnet current", units="A")
def magnet_current(run):
    """Current through the magnet at the start of the run."""
    _require(run, MAGNET)
    return float(run[MAGNET].run_value("actualCurrent"))
