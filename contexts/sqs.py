# ruff: noqa: F821  (DAMNIT annotations like "mymdc#sample_name" are strings, not Python names)
"""Starting context for SQS (SASE3): beam at two XGMs and the time-of-flight digitizer.

    damnit init 2468 --context contexts/sqs.py

Sources (as SQS records them): the SASE3 XGM in the tunnel ``SA3_XTD10_XGM/XGM/DOOCS`` and the one
in front of the instrument ``SQS_DIAG1_XGMD/XGM/DOOCS``, the bunch pattern
``SQS_RR_UTC/TSYS/TIMESERVER``, the monochromator ``SA3_XTD10_MONO/MDL/PHOTON_ENERGY`` and the ADQ
digitizer ``SQS_DIGITIZER_UTC1/ADC/1`` (``network``: ``digitizers.channel_<board>_<letter>.raw.samples``)
that records a time-of-flight spectrometer. Change a name or the digitizer channel here if your setup
differs; a variable whose source is missing from a run is skipped with the reason.
"""

import numpy as np
import xarray as xr
from damnit_ctx import Cell, Skip, Variable

TUNNEL_XGM = "SA3_XTD10_XGM/XGM/DOOCS"
XGM = "SQS_DIAG1_XGMD/XGM/DOOCS"
TIMESERVER = "SQS_RR_UTC/TSYS/TIMESERVER"
MONO = "SA3_XTD10_MONO/MDL/PHOTON_ENERGY"
DIGITIZER = "SQS_DIGITIZER_UTC1/ADC/1:network"
CHANNEL = "1_A"  # the digitizer channel the spectrometer is connected to

TRACE_TRAINS, BASELINE = 50, 1000  # trains averaged for the mean trace; samples before the signal
PEAK_SIGMA = 10  # a peak of the mean trace stands this many noise sigma above the baseline


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


@Variable(title="Beam/Pulse energy (tunnel)", units="uJ", summary="mean")
def tunnel_pulse_energy(run):
    """Mean SASE3 pulse energy per train at the XGM in the tunnel."""
    return _sase3_energy(run, TUNNEL_XGM)


@Variable(title="Beam/Pulse energy", units="uJ", summary="mean")
def pulse_energy(run):
    """Mean pulse energy per train at the instrument's XGM (it sees SASE3 pulses only)."""
    _require(run, XGM, f"{XGM}:output")
    n_pulses = int(run[XGM, "pulseEnergy.numberOfBunchesActual"].ndarray().max())
    if n_pulses == 0:
        raise Skip("the XGM saw no pulses")
    energy = run[f"{XGM}:output", "data.intensityTD"].xarray(roi=np.s_[:n_pulses])
    return energy.mean(energy.dims[1])


@Variable(title="Beam/Pulses", summary="mean")
def pulses(run):
    """X-ray pulses per train sent to SASE3 (bunch pattern: T4D dump with the soft kick)."""
    _require(run, f"{TIMESERVER}:outputBunchPattern")
    table = run[f"{TIMESERVER}:outputBunchPattern", "data.bunchPatternTable"]
    pattern = table.ndarray()
    sase3 = ((pattern & (0xF << 18)) == (4 << 18)) & ((pattern & (1 << 27)) != 0)
    return xr.DataArray(sase3.sum(axis=1), dims=["trainId"], coords={"trainId": table.train_id_coordinates()})


@Variable(title="Beam/Photon energy", units="eV")
def photon_energy(run):
    """Monochromator photon energy (mean over the run)."""
    _require(run, MONO)
    return float(run[MONO, "actualEnergy"].ndarray().mean())


# -- Time of flight ----------------------------------------------------------------------------


@Variable(title="ToF/Mean trace")
def tof_trace(run):
    """Mean time-of-flight trace over the first trains (baseline removed, inverted)."""
    return _mean_trace(run, CHANNEL)


@Variable(title="ToF/Peaks")
def tof_peaks(run, trace: "var#tof_trace"):
    """Sample numbers of the peaks in the mean trace; the table shows how many there are."""
    values = np.asarray(trace)
    noise = values[:BASELINE].std() or 1.0
    above = values > PEAK_SIGMA * noise
    is_peak = above[1:-1] & (values[1:-1] >= values[:-2]) & (values[1:-1] > values[2:])
    positions = np.flatnonzero(is_peak) + 1
    return Cell(positions, summary_value=len(positions))


@Variable(title="ToF/Signal", summary="mean")
def tof_signal(run):
    """Integrated time-of-flight signal of each train (baseline removed, inverted)."""
    _require(run, DIGITIZER)
    samples = run[DIGITIZER, f"digitizers.channel_{CHANNEL}.raw.samples"]
    traces = samples.xarray().astype(np.float32)
    baseline = traces[:, :BASELINE].mean(traces.dims[1])
    return (baseline - traces).sum(traces.dims[1])
