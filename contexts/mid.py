# ruff: noqa: F821  (DAMNIT annotations like "mymdc#sample_name" are strings, not Python names)
"""Starting context for MID (SASE2): beam, AGIPD 1M, JUNGFRAU 500K, the beamstop and the sample camera.

    damnit init 2468 --context contexts/mid.py

Sources (as MID records them): the SASE2 XGM ``SA2_XTD1_XGM/XGM/DOOCS``, the undulator energy
``MID_XTD1_UND/DOOCS/ENERGY``, the bunch pattern ``MID_RR_UTC/TSYS/TIMESERVER``, the attenuator
``SA2_XTD1_ATT/MDL/MAIN``, the AGIPD 1M ``MID_DET_AGIPD1M-1`` (raw ``DET/<m>CH0:xtdf``, corrected
``CORR/<m>CH0:output``) with its control ``MID_EXP_AGIPD1M1/MDL/FPGA_COMP``, the JUNGFRAU 500K
``MID_EXP_JF500K1/DET/JNGFR01`` (``daqOutput``, ``data.adc``), the beamstop motors
``MID_EXP_SAM/MOTOR/BSTX``/``BSTY`` and the sample camera ``MID_EXP_SAM/CAM/CAM1``. Change a name here
if your setup differs; a variable whose source is missing from a run is skipped with the reason.
"""

import numpy as np
import xarray as xr
from damnit_ctx import Skip, Variable
from extra_data import by_index
from extra_data.components import AGIPD1M, JUNGFRAU

XGM = "SA2_XTD1_XGM/XGM/DOOCS"
UNDULATOR = "MID_XTD1_UND/DOOCS/ENERGY"
TIMESERVER = "MID_RR_UTC/TSYS/TIMESERVER"
ATTENUATOR = "SA2_XTD1_ATT/MDL/MAIN"
AGIPD = "MID_DET_AGIPD1M-1"
AGIPD_CONTROL = "MID_EXP_AGIPD1M1/MDL/FPGA_COMP"
JF500K = "MID_EXP_JF500K1"
BEAMSTOP_X, BEAMSTOP_Y = "MID_EXP_SAM/MOTOR/BSTX", "MID_EXP_SAM/MOTOR/BSTY"
SAMPLE_CAMERA = "MID_EXP_SAM/CAM/CAM1:daqOutput"

MEAN_TRAINS, MEAN_FRAMES = 5, 16  # the mean AGIPD image uses this many trains x frames per train
SIGNAL_SIGMA, LIT_PIXELS = 5, 100  # a pixel is lit 5 sigma above its frame's median; a hit has 100
GAIN_MODES = {0: "adaptive", 1: "fixed high", 2: "fixed medium", 3: "fixed low"}


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
    """Mean pulse energy per train at the SASE2 XGM."""
    _require(run, XGM, f"{XGM}:output")
    n_pulses = int(run[XGM, "pulseEnergy.numberOfBunchesActual"].ndarray().max())
    if n_pulses == 0:
        raise Skip("the XGM saw no pulses")
    energy = run[f"{XGM}:output", "data.intensityTD"].xarray(roi=np.s_[:n_pulses])
    return energy.mean(energy.dims[1])


@Variable(title="Beam/Photon energy", units="keV")
def photon_energy(run):
    """Undulator photon energy (mean over the run)."""
    _require(run, UNDULATOR)
    return float(run[UNDULATOR, "actualPosition"].ndarray().mean())


@Variable(title="Beam/Pulses", summary="mean")
def pulses(run):
    """X-ray pulses per train sent to SASE2 (bunch pattern: T5D dump)."""
    _require(run, f"{TIMESERVER}:outputBunchPattern")
    table = run[f"{TIMESERVER}:outputBunchPattern", "data.bunchPatternTable"]
    sase2 = (table.ndarray() & (0xF << 18)) == (2 << 18)
    return xr.DataArray(sase2.sum(axis=1), dims=["trainId"], coords={"trainId": table.train_id_coordinates()})


@Variable(title="Beam/Transmission")
def transmission(run):
    """Transmission of the SASE2 attenuator at the start of the run."""
    _require(run, ATTENUATOR)
    return float(run[ATTENUATOR].run_value("actual.transmission"))


# -- AGIPD -------------------------------------------------------------------------------------


@Variable(title="AGIPD/Frames per train")
def agipd_frames(run):
    """Most frames the AGIPD recorded in one train."""
    _has_detector(run, AGIPD, "DET")
    return int(AGIPD1M(run, detector_name=AGIPD, raw=True).frame_counts.max())


@Variable(title="AGIPD/Memory cells")
def agipd_memory_cells(run):
    """Memory cells configured for the run."""
    _require(run, AGIPD_CONTROL)
    return int(run[AGIPD_CONTROL].run_value("bunchStructure.nPulses"))


@Variable(title="AGIPD/Gain mode")
def agipd_gain_mode(run):
    """Gain mode configured for the run."""
    _require(run, AGIPD_CONTROL)
    index = int(run[AGIPD_CONTROL].run_value("gainModeIndex"))
    return GAIN_MODES.get(index, f"mode {index}")


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


@Variable(title="AGIPD/Mean image", data="proc")
def agipd_mean_image(run):
    """Mean corrected image of the first trains and frames, modules 4 to a row."""
    _has_detector(run, AGIPD, "CORR")
    det = AGIPD1M(run.select_trains(np.s_[:MEAN_TRAINS]), detector_name=AGIPD, raw=False)
    frames = det.get_array("image.data", pulses=by_index[:MEAN_FRAMES])
    return _module_mosaic(frames.mean(["train", "pulse"]), det.n_modules)


# -- JUNGFRAU ----------------------------------------------------------------------------------


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


# -- Sample ------------------------------------------------------------------------------------


@Variable(title="Sample/Camera")
def sample_camera(run):
    """Mean image of the sample camera over the first 10 trains."""
    _require(run, SAMPLE_CAMERA)
    return run[SAMPLE_CAMERA, "data.image.pixels"].select_trains(np.s_[:10]).ndarray().mean(axis=0)


@Variable(title="Sample/Beamstop X", units="mm", summary="mean")
def beamstop_x(run):
    """Beamstop horizontal position per train."""
    _require(run, BEAMSTOP_X)
    return run[BEAMSTOP_X, "actualPosition"].xarray()


@Variable(title="Sample/Beamstop Y", units="mm", summary="mean")
def beamstop_y(run):
    """Beamstop vertical position per train."""
    _require(run, BEAMSTOP_Y)
    return run[BEAMSTOP_Y, "actualPosition"].xarray()
