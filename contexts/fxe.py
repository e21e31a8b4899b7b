# ruff: noqa: F821  (DAMNIT annotations like "mymdc#sample_name" are strings, not Python names)
"""Starting context for FXE (SASE1): beam, LPD 1M, JUNGFRAU 1M, the GEC camera and sample motors.

    damnit init 2468 --context contexts/fxe.py

Sources (as FXE records them): the SASE1 XGM ``SA1_XTD2_XGM/XGM/DOOCS``, the LPD 1M
``FXE_DET_LPD1M-1`` (raw ``DET/<m>CH0:xtdf``, corrected ``CORR/<m>CH0:output``), the JUNGFRAU 1M
receivers ``FXE_XAD_JF1M/DET/RECEIVER-1`` and ``-2`` (``daqOutput``, ``data.adc``), the GEC camera
``FXE_XAD_GEC/CAM/CAMERA``, the user sample motors ``FXE_SMS_USR/MOTOR/UM01``/``UM02`` and the
pump-probe laser delay line ``FXE_AUXT_LIC/DOOCS/PPODL``. Change a name here if your setup differs;
a variable whose source is missing from a run is skipped with the reason.
"""

import numpy as np
import xarray as xr
from damnit_ctx import Skip, Variable
from extra_data import by_index
from extra_data.components import JUNGFRAU, LPD1M

XGM = "SA1_XTD2_XGM/XGM/DOOCS"
LPD = "FXE_DET_LPD1M-1"
JF1M = "FXE_XAD_JF1M"
GEC_CAMERA = "FXE_XAD_GEC/CAM/CAMERA:daqOutput"
SAMPLE_X, SAMPLE_Y = "FXE_SMS_USR/MOTOR/UM01", "FXE_SMS_USR/MOTOR/UM02"
LASER_DELAY = "FXE_AUXT_LIC/DOOCS/PPODL"

MEAN_TRAINS, MEAN_FRAMES = 5, 16  # the mean LPD image uses this many trains x frames per train
SIGNAL_SIGMA, LIT_PIXELS = 5, 100  # a pixel is lit 5 sigma above its frame's median; a hit has 100
HC_KEV_NM = 1.23984198  # photon energy [keV] x wavelength [nm]


def _require(run, *sources):
    missing = [s for s in sources if s not in run.all_sources]
    if missing:
        raise Skip(f"not in this run: {', '.join(missing)}")


def _has_detector(run, name: str, kind: str = "DET") -> None:
    if not any(s.startswith(f"{name}/{kind}/") for s in run.instrument_sources):
        raise Skip(f"no {name}/{kind} data in this run")


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
    """Mean SASE1 pulse energy per train at the XGM in the tunnel."""
    _require(run, XGM, f"{XGM}:output")
    n_pulses = int(run[XGM, "pulseEnergy.numberOfSa1BunchesActual"].ndarray().max())
    if n_pulses == 0:
        raise Skip("the XGM saw no SASE1 pulses")
    energy = run[f"{XGM}:output", "data.intensitySa1TD"].xarray(roi=np.s_[:n_pulses])
    return energy.mean(energy.dims[1])


@Variable(title="Beam/Pulses", summary="mean")
def pulses(run):
    """SASE1 pulses per train counted by the XGM."""
    _require(run, XGM)
    return run[XGM, "pulseEnergy.numberOfSa1BunchesActual"].xarray()


@Variable(title="Beam/Photon energy", units="keV")
def photon_energy(run):
    """From the wavelength the XGM uses for its calibration."""
    _require(run, XGM)
    return HC_KEV_NM / float(run[XGM, "pulseEnergy.wavelengthUsed"].ndarray().mean())


# -- LPD ---------------------------------------------------------------------------------------


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


@Variable(title="LPD/Frames per train")
def lpd_frames(run):
    """Most frames the LPD recorded in one train."""
    _has_detector(run, LPD, "DET")
    return int(LPD1M(run, detector_name=LPD, raw=True).frame_counts.max())


@Variable(title="LPD/Mean image", data="proc")
def lpd_mean_image(run):
    """Mean corrected image of the first trains and frames, modules 4 to a row."""
    _has_detector(run, LPD, "CORR")
    det = LPD1M(run.select_trains(np.s_[:MEAN_TRAINS]), detector_name=LPD, raw=False)
    frames = det.get_array("image.data", pulses=by_index[:MEAN_FRAMES])
    return _module_mosaic(frames.mean(["train", "pulse"]), det.n_modules)


# -- JUNGFRAU ----------------------------------------------------------------------------------


@Variable(title="JUNGFRAU/Lit pixels", summary="mean")
def jf_lit_pixels(run):
    """Pixels per train more than SIGNAL_SIGMA noise sigmas above their frame's median (raw ADU:
    subtract a dark run first to find weak signals)."""
    _has_detector(run, JF1M)
    det = JUNGFRAU(run, detector_name=JF1M, raw=True)
    counts = []
    for part in det.split_trains(trains_per_part=20):  # a few trains in memory at a time
        frames = part.get_array("data.adc").transpose("train", ...)
        flat = frames.values.reshape(frames.shape[0], -1).astype(np.float32)
        median = np.median(flat, axis=1, keepdims=True)
        sigma = 1.4826 * np.median(np.abs(flat - median), axis=1, keepdims=True)
        counts.append(xr.DataArray((flat > median + SIGNAL_SIGMA * sigma).sum(axis=1), dims=["trainId"],
                                   coords={"trainId": frames.coords["train"].values}))
    return xr.concat(counts, "trainId")


@Variable(title="JUNGFRAU/Trains with signal")
def jf_signal_trains(run, lit_pixels: "var#jf_lit_pixels"):
    """Trains with at least LIT_PIXELS lit pixels (a lit-pixel hit finder)."""
    return int((np.asarray(lit_pixels) >= LIT_PIXELS).sum())


@Variable(title="JUNGFRAU/Mean image")
def jf_mean_image(run):
    """Mean raw image of the first 10 trains, the two modules one above the other."""
    _has_detector(run, JF1M)
    det = JUNGFRAU(run.select_trains(np.s_[:10]), detector_name=JF1M, raw=True)
    mean = det.get_array("data.adc").mean(["train", "cell"])
    return np.concatenate(list(mean.values), axis=0)


# -- Sample and laser --------------------------------------------------------------------------


@Variable(title="Sample/GEC camera")
def gec_image(run):
    """Mean image of the GEC camera over the first 10 trains."""
    _require(run, GEC_CAMERA)
    return run[GEC_CAMERA, "data.image.pixels"].select_trains(np.s_[:10]).ndarray().mean(axis=0)


@Variable(title="Sample/X", units="mm", summary="mean")
def sample_x(run):
    """User motor UM01 per train."""
    _require(run, SAMPLE_X)
    return run[SAMPLE_X, "actualPosition"].xarray()


@Variable(title="Sample/Y", units="mm", summary="mean")
def sample_y(run):
    """User motor UM02 per train."""
    _require(run, SAMPLE_Y)
    return run[SAMPLE_Y, "actualPosition"].xarray()


@Variable(title="Laser/Delay line", units="mm", summary="mean")
def laser_delay(run):
    """Position of the pump-probe laser's optical delay line per train."""
    _require(run, LASER_DELAY)
    return run[LASER_DELAY, "actualPosition"].xarray()
