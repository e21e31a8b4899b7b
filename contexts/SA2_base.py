# ruff: noqa: F821  (DAMNIT annotations like "meta#run_number" are strings, not Python names)
"""Starting context for an SA2 instrument (MID, HED).

Run metadata, data volume and the SA2 XGM's pulse energy. Copy it with
``damnit init DIR --context contexts/SA2_base.py`` and add your own variables below.
"""

from datetime import timedelta
from pathlib import Path

import numpy as np
from damnit_ctx import Skip, Variable

SASE = "SA2"

# -- Run metadata ------------------------------------------------------------------------------


@Variable(title="Trains")
def n_trains(run):
    """Number of trains recorded in the run."""
    return len(run.train_ids)


@Variable(title="Run length")
def run_length(run):
    """Time from the first to the last train (h:mm:ss)."""
    ts = run.train_timestamps()
    seconds = float((ts[-1] - ts[0]) / np.timedelta64(1, "s"))
    return str(timedelta(seconds=round(seconds)))


def _folder_size_gb(path: Path) -> float:
    if not path.is_dir():
        raise Skip(f"{path} does not exist")
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9


@Variable(title="Raw size", units="GB")
def raw_size(run, proposal_path: "meta#proposal_path", run_no: "meta#run_number"):
    """Size of the run's raw data on disk."""
    return _folder_size_gb(Path(proposal_path) / "raw" / f"r{run_no:04d}")


@Variable(title="Proc size", units="GB", data="proc")
def proc_size(run, proposal_path: "meta#proposal_path", run_no: "meta#run_number"):
    """Size of the run's corrected (proc) data on disk."""
    return _folder_size_gb(Path(proposal_path) / "proc" / f"r{run_no:04d}")


# -- Beam properties ---------------------------------------------------------------------------


def _xgm_source(run) -> str:
    """The SA2 XGM's control source (e.g. SA2_XTD*_XGM/XGM/DOOCS), or Skip if there is none."""
    candidates = sorted(s for s in run.control_sources if s.startswith(f"{SASE}_XTD") and "_XGM/" in s)
    if not candidates:
        raise Skip(f"no {SASE} XGM in this run")
    return candidates[0]


@Variable(title="XGM intensity", units="uJ", summary="mean")
def xgm_intensity(run):
    """Mean pulse energy per train from the SA2 XGM."""
    source = _xgm_source(run)
    fast = f"{source}:output"
    if fast in run.instrument_sources:
        pulses = int(run[source, "pulseEnergy.nummberOfBunches"].ndarray().max())
        if pulses > 0:
            energy = run[fast, "data.intensityTD"].xarray(roi=np.s_[:pulses])
            return energy.mean(energy.dims[1])
    return run[source, "pulseEnergy.photonFlux"].xarray()


@Variable(title="Pulses", summary="mean")
def pulses(run):
    """Pulses per train seen by the SA2 XGM."""
    return run[_xgm_source(run), "pulseEnergy.nummberOfBunches"].xarray()


@Variable(title="Photon energy", units="keV")
def photon_energy(run):
    """From the wavelength the SA2 XGM uses for its calibration."""
    wavelength_nm = float(run[_xgm_source(run), "pulseEnergy.wavelengthUsed"].ndarray().mean())
    return 1.23984198 / wavelength_nm
