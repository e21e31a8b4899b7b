# ruff: noqa: F821  (DAMNIT annotations like "meta#run_number" are strings, not Python names)
"""Starting context for any European XFEL instrument: the run, its data volume and its SASE's beam.

Copy it into a new DAMNIT folder and add your own variables below:

    damnit init 2468 --context contexts/sase_base.py

Which SASE: with ``SASE = None`` each run's SASE comes from the proposal's folder,
``<data root>/<INSTRUMENT>/<cycle>/p<NNNNNN>`` (SPB and FXE are on SASE1, MID and HED on SASE2, SCS, SQS
and SXP on SASE3), or, for data copied elsewhere, from the sources the run recorded. Set ``SASE = 1``,
``2`` or ``3`` to fix it. The instrument templates next to this file (``spb.py``, ``fxe.py``,
``mid.py``, ``hed.py``, ``scs.py``, ``sqs.py``) start from more: their detectors, digitizers and motors.
"""

import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import xarray as xr
from damnit_ctx import Skip, Variable

SASE = None  # 1, 2 or 3; None: from the proposal's instrument

SASE_OF_INSTRUMENT = {"SPB": 1, "FXE": 1, "MID": 2, "HED": 2, "SCS": 3, "SQS": 3, "SXP": 3}
TUNNEL_XGM = {1: "SA1_XTD2_XGM/XGM/DOOCS", 2: "SA2_XTD1_XGM/XGM/DOOCS", 3: "SA3_XTD10_XGM/XGM/DOOCS"}
TIMESERVER = re.compile(r"^[A-Z]{3}_(BR|RR)_(UTC|SYS)/TSYS/TIMESERVER$")
HC_KEV_NM = 1.23984198  # photon energy [keV] x wavelength [nm]


# -- Run ---------------------------------------------------------------------------------------


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


@Variable(title="Sample")
def sample_name(run, name: "mymdc#sample_name"):
    """The sample set for this run in myMdC."""
    return name


@Variable(title="Run type")
def run_type(run, kind: "mymdc#run_type"):
    """The run type set in myMdC (e.g. dark, calibration, sample)."""
    return kind


# -- Beam --------------------------------------------------------------------------------------


@Variable(title="SASE", transient=True)
def sase(run, proposal_path: "meta#proposal_path"):
    """1, 2 or 3: SASE if set, else from the proposal folder's instrument, else from the sources."""
    if SASE is not None:
        return int(SASE)
    parts = Path(proposal_path).parts if proposal_path else ()
    if len(parts) >= 3 and parts[-3] in SASE_OF_INSTRUMENT:
        return SASE_OF_INSTRUMENT[parts[-3]]
    found = {n for n, xgm in TUNNEL_XGM.items() if xgm in run.control_sources}
    if len(found) == 1:
        return found.pop()
    raise Skip("cannot tell which SASE this run used: set SASE at the top of the context file")


def _xgm(run, sase: int) -> str:
    xgm = TUNNEL_XGM[sase]
    if xgm not in run.control_sources:
        raise Skip(f"no {xgm} in this run")
    return xgm


@Variable(title="XGM pulse energy", units="uJ", summary="mean")
def xgm_energy(run, sase: "var#sase"):
    """Mean pulse energy per train from the SASE's XGM in the tunnel."""
    xgm = _xgm(run, sase)
    n_key, energy_key = f"pulseEnergy.numberOfSa{sase}BunchesActual", f"data.intensitySa{sase}TD"
    if n_key not in run[xgm]:  # SASE2 XGMs (and older data) have one set of keys
        n_key, energy_key = "pulseEnergy.numberOfBunchesActual", "data.intensityTD"
    n_pulses = int(run[xgm, n_key].ndarray().max())
    if n_pulses == 0:
        raise Skip(f"{xgm} saw no SASE{sase} pulses")
    energy = run[f"{xgm}:output", energy_key].xarray(roi=np.s_[:n_pulses])
    return energy.mean(energy.dims[1])


@Variable(title="Photon energy", units="keV")
def photon_energy(run, sase: "var#sase"):
    """From the wavelength the SASE's XGM uses for its calibration."""
    wavelength_nm = float(run[_xgm(run, sase), "pulseEnergy.wavelengthUsed"].ndarray().mean())
    return HC_KEV_NM / wavelength_nm


@Variable(title="Pulses", summary="mean")
def pulses(run, sase: "var#sase"):
    """X-ray pulses per train sent to the SASE, decoded from the bunch pattern."""
    sources = sorted(s for s in run.control_sources if TIMESERVER.match(s))
    if not sources:
        raise Skip("no bunch pattern (timeserver) in this run")
    if f"{sources[0]}:outputBunchPattern" in run.instrument_sources:
        table = run[f"{sources[0]}:outputBunchPattern", "data.bunchPatternTable"]
    else:
        table = run[sources[0], "bunchPatternTable"]
    pattern = table.ndarray()
    destination = pattern & (0xF << 18)
    if sase == 2:
        to_sase = destination == (2 << 18)
    else:  # SASE1 and SASE3 share a dump; the soft kick sends pulses to SASE3
        kicked = (pattern & (1 << 27)) != 0
        to_sase = (destination == (4 << 18)) & (kicked if sase == 3 else ~kicked)
    return xr.DataArray(to_sase.sum(axis=1), dims=["trainId"], coords={"trainId": table.train_id_coordinates()})
