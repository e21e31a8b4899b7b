# ruff: noqa: F821  (DAMNIT annotations like "mymdc#sample_name" are strings, not Python names)
"""Starting context for SPB/SFX (SASE1): beam, AGIPD 1M, detector distance and the inline microscope.

    damnit init 2468 --context contexts/spb.py

Sources (as SPB records them): the XGM in front of the instrument ``SPB_XTD9_XGM/XGM/DOOCS``, the
undulator energy ``SPB_XTD2_UND/DOOCS/ENERGY``, the bunch pattern ``SPB_RR_SYS/TSYS/TIMESERVER``, the
attenuators ``SA1_XTD2_ATT/MDL/MAIN`` and ``SPB_XTD9_ATT/MDL/MAIN``, the AGIPD 1M
``SPB_DET_AGIPD1M-1`` (raw ``DET/<m>CH0:xtdf``, corrected ``CORR/<m>CH0:output``) with its control
``SPB_IRU_AGIPD1M1/MDL/FPGA_COMP`` and distance motor ``SPB_IRU_AGIPD1M/MOTOR/Z_STEPPER``, and the
inline microscope camera ``SPB_IRU_INLINEMIC/CAM/CAM``. Change a name here if your setup differs;
a variable whose source is missing from a run is skipped with the reason.
"""

import numpy as np
import xarray as xr
from damnit_ctx import Skip, Variable
from extra_data import by_index
from extra_data.components import AGIPD1M

XGM = "SPB_XTD9_XGM/XGM/DOOCS"
UNDULATOR = "SPB_XTD2_UND/DOOCS/ENERGY"
TIMESERVER = "SPB_RR_SYS/TSYS/TIMESERVER"
ATTENUATORS = ("SA1_XTD2_ATT/MDL/MAIN", "SPB_XTD9_ATT/MDL/MAIN")
AGIPD = "SPB_DET_AGIPD1M-1"
AGIPD_CONTROL = "SPB_IRU_AGIPD1M1/MDL/FPGA_COMP"
DETECTOR_Z = "SPB_IRU_AGIPD1M/MOTOR/Z_STEPPER"
INLINE_CAMERA = "SPB_IRU_INLINEMIC/CAM/CAM:daqOutput"

MEAN_TRAINS, MEAN_FRAMES = 5, 16  # the mean AGIPD image uses this many trains x frames per train
GAIN_MODES = {0: "adaptive", 1: "fixed high", 2: "fixed medium", 3: "fixed low"}


def _require(run, *sources):
    missing = [s for s in sources if s not in run.all_sources]
    if missing:
        raise Skip(f"not in this run: {', '.join(missing)}")


def _agipd(run, raw: bool) -> AGIPD1M:
    kind = "DET" if raw else "CORR"
    if not any(s.startswith(f"{AGIPD}/{kind}/") for s in run.instrument_sources):
        raise Skip(f"no {'raw' if raw else 'corrected'} {AGIPD} data in this run")
    return AGIPD1M(run, detector_name=AGIPD, raw=raw)


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
    """Mean SASE1 pulse energy per train at the instrument's XGM."""
    _require(run, XGM, f"{XGM}:output")
    n_pulses = int(run[XGM, "pulseEnergy.numberOfSa1BunchesActual"].ndarray().max())
    if n_pulses == 0:
        raise Skip("the XGM saw no SASE1 pulses")
    energy = run[f"{XGM}:output", "data.intensitySa1TD"].xarray(roi=np.s_[:n_pulses])
    return energy.mean(energy.dims[1])


@Variable(title="Beam/Photon energy", units="keV")
def photon_energy(run):
    """Undulator photon energy (mean over the run)."""
    _require(run, UNDULATOR)
    return float(run[UNDULATOR, "actualPosition"].ndarray().mean())


@Variable(title="Beam/Pulses", summary="mean")
def pulses(run):
    """X-ray pulses per train sent to SASE1 (bunch pattern: T4D dump, no soft kick to SASE3)."""
    _require(run, f"{TIMESERVER}:outputBunchPattern")
    table = run[f"{TIMESERVER}:outputBunchPattern", "data.bunchPatternTable"]
    pattern = table.ndarray()
    sase1 = ((pattern & (0xF << 18)) == (4 << 18)) & ((pattern & (1 << 27)) == 0)
    return xr.DataArray(sase1.sum(axis=1), dims=["trainId"], coords={"trainId": table.train_id_coordinates()})


@Variable(title="Beam/Transmission")
def transmission(run):
    """Combined transmission of the XTD2 and XTD9 attenuators at the start of the run."""
    _require(run, *ATTENUATORS)
    return float(np.prod([run[att].run_value("actual.transmission") for att in ATTENUATORS]))


# -- AGIPD -------------------------------------------------------------------------------------


@Variable(title="AGIPD/Frames per train")
def agipd_frames(run):
    """Most frames the AGIPD recorded in one train."""
    return int(_agipd(run, raw=True).frame_counts.max())


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


@Variable(title="AGIPD/Distance motor", units="mm", summary="mean")
def detector_z(run):
    """Position of the AGIPD distance motor (encoder) per train."""
    _require(run, DETECTOR_Z)
    return run[DETECTOR_Z, "encoderPosition"].xarray()


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
    det = _agipd(run.select_trains(np.s_[:MEAN_TRAINS]), raw=False)
    frames = det.get_array("image.data", pulses=by_index[:MEAN_FRAMES])
    return _module_mosaic(frames.mean(["train", "pulse"]), det.n_modules)


# -- Sample ------------------------------------------------------------------------------------


@Variable(title="Sample/Inline microscope")
def inline_microscope(run):
    """Mean image of the inline microscope over the first 10 trains."""
    _require(run, INLINE_CAMERA)
    return run[INLINE_CAMERA, "data.image.pixels"].select_trains(np.s_[:10]).ndarray().mean(axis=0)
