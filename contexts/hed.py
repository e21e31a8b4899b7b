# ruff: noqa: F821  (DAMNIT annotations like "mymdc#sample_name" are strings, not Python names)
"""Starting context for HED (SASE2): beam, JUNGFRAU 500K, ePix10k and the sample camera.

    damnit init 2468 --context contexts/hed.py

Sources (as HED records them): the XGM in front of the instrument ``HED_XTD6_XGM/XGM/DOOCS``, the
bunch pattern ``HED_RR_SYS/TSYS/TIMESERVER``, the JUNGFRAU 500K in interaction area 1
``HED_IA1_JF500K1/DET/JNGFR01`` (``daqOutput``, ``data.adc``), the ePix10k
``HED_IA1_EPIX10K-1/DET/RECEIVER`` (``daqOutput``, ``data.image.pixels``) and the sample camera
``HED_OPT_PAM/CAM/SAMPLE_CAM_4``. Change a name here if your setup differs; a variable whose source
is missing from a run is skipped with the reason.
"""

import numpy as np
import xarray as xr
from damnit_ctx import Skip, Variable
from extra_data.components import JUNGFRAU

XGM = "HED_XTD6_XGM/XGM/DOOCS"
TIMESERVER = "HED_RR_SYS/TSYS/TIMESERVER"
JF500K = "HED_IA1_JF500K1"
EPIX = "HED_IA1_EPIX10K-1/DET/RECEIVER:daqOutput"
SAMPLE_CAMERA = "HED_OPT_PAM/CAM/SAMPLE_CAM_4:daqOutput"

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
    """Mean pulse energy per train at the instrument's XGM."""
    _require(run, XGM, f"{XGM}:output")
    n_pulses = int(run[XGM, "pulseEnergy.numberOfBunchesActual"].ndarray().max())
    if n_pulses == 0:
        raise Skip("the XGM saw no pulses")
    energy = run[f"{XGM}:output", "data.intensityTD"].xarray(roi=np.s_[:n_pulses])
    return energy.mean(energy.dims[1])


@Variable(title="Beam/Photon energy", units="keV")
def photon_energy(run):
    """From the wavelength the XGM uses for its calibration."""
    _require(run, XGM)
    return HC_KEV_NM / float(run[XGM, "pulseEnergy.wavelengthUsed"].ndarray().mean())


@Variable(title="Beam/Pulses", summary="mean")
def pulses(run):
    """X-ray pulses per train sent to SASE2 (bunch pattern: T5D dump)."""
    _require(run, f"{TIMESERVER}:outputBunchPattern")
    table = run[f"{TIMESERVER}:outputBunchPattern", "data.bunchPatternTable"]
    sase2 = (table.ndarray() & (0xF << 18)) == (2 << 18)
    return xr.DataArray(sase2.sum(axis=1), dims=["trainId"], coords={"trainId": table.train_id_coordinates()})


# -- Detectors ---------------------------------------------------------------------------------


@Variable(title="JUNGFRAU/Lit pixels", summary="mean")
def jf_lit_pixels(run):
    """Pixels per train more than SIGNAL_SIGMA noise sigmas above their frame's median (raw ADU:
    subtract a dark run first to find weak signals)."""
    _has_detector(run, JF500K)
    det = JUNGFRAU(run, detector_name=JF500K, raw=True)
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
    """Mean raw image of the first 10 trains."""
    _has_detector(run, JF500K)
    det = JUNGFRAU(run.select_trains(np.s_[:10]), detector_name=JF500K, raw=True)
    return det.get_array("data.adc").mean(["train", "cell"]).values[0]


@Variable(title="ePix10k/Mean image")
def epix_mean_image(run):
    """Mean raw image of the ePix10k over the first 10 trains."""
    _require(run, EPIX)
    return run[EPIX, "data.image.pixels"].select_trains(np.s_[:10]).ndarray().mean(axis=0)


# -- Sample ------------------------------------------------------------------------------------


@Variable(title="Sample/Camera")
def sample_camera(run):
    """Mean image of the sample camera over the first 10 trains."""
    _require(run, SAMPLE_CAMERA)
    return run[SAMPLE_CAMERA, "data.image.pixels"].select_trains(np.s_[:10]).ndarray().mean(axis=0)
