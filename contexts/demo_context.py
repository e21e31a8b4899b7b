# ruff: noqa: F821  (DAMNIT annotations like "var#name" are strings, not Python names)
"""Demo context for the mock runs made by ``backend/mockruns.py``.

It shows every kind of value DAMNIT stores: scalars with units, a status string, per-train trends
(DataArrays with a trainId coordinate), a mean camera image, a formatted Cell, a matplotlib figure,
a tagged group of variables, a processed-data variable, a chain of dependencies, a transient
helper and a variable that is skipped for some runs.

Sources (see backend/mockruns.py): XGM ``SA1_XTD2_XGM/DOOCS/MAIN``, Basler camera
``SPB_IRU_CAM/CAM/SIDEMIC``, sample motor ``SPB_IRU_MOTORS/MOTOR/SAMPLE_X`` and, in proc data,
the spectrometer ``SPB_XTD9_SPECTROMETER/PROC/SPECTRUM``.
"""

from datetime import timedelta

import numpy as np
import xarray as xr
from damnit_ctx import Cell, Group, Skip, Variable

XGM = "SA1_XTD2_XGM/DOOCS/MAIN"
CAMERA = "SPB_IRU_CAM/CAM/SIDEMIC:daqOutput"
MOTOR = "SPB_IRU_MOTORS/MOTOR/SAMPLE_X"
SPECTROMETER = "SPB_XTD9_SPECTROMETER/PROC/SPECTRUM:output"

# -- Run metadata ------------------------------------------------------------------------------


@Variable(title="Run/Trains", tags=["run"])
def n_trains(run):
    """Number of trains recorded in the run."""
    return len(run.train_ids)


@Variable(title="Run/Length", tags=["run"])
def run_length(run):
    """Time from the first to the last train (h:mm:ss)."""
    ts = run.train_timestamps()
    seconds = float((ts[-1] - ts[0]) / np.timedelta64(1, "s"))
    return str(timedelta(seconds=round(seconds)))


# -- XGM: a reusable group of variables --------------------------------------------------------


@Group(tags=["XGM"])
class XGMDiagnostics:
    """Pulse energy and pointing from one XGM."""

    source: str

    @Variable(title="Pulse energy", units="uJ", summary="mean")
    def energy(self, run):
        """Mean pulse energy per train."""
        return run[self.source, "pulseEnergy.photonFlux"].xarray()

    @Variable(title="Mean energy", units="uJ")
    def mean_energy(self, run, energy: "self#energy"):
        return float(energy.mean())

    @Variable(title="Pulses")
    def pulses(self, run):
        """Number of pulses per train (as seen by the XGM)."""
        return int(run[self.source, "pulseEnergy.nummberOfBunches"].ndarray().max())

    @Variable(title="Beam x", units="mm", summary="mean")
    def beam_x(self, run):
        return run[self.source, "beamPosition.ixPos"].xarray()

    @Variable(title="Photon energy", units="keV")
    def photon_energy(self, run):
        wavelength_nm = run[self.source, "pulseEnergy.wavelengthUsed"].ndarray().mean()
        return 1.23984198 / wavelength_nm


xgm = XGMDiagnostics(title="XGM", source=XGM)


@Variable(title="XGM/Beam status")
def beam_status(run, energy: "var#xgm.mean_energy"):
    """Simple verdict on the beam from the mean pulse energy."""
    if energy > 900:
        return "Strong beam"
    if energy > 500:
        return "OK"
    return "Weak beam"


@Variable(title="XGM/Energy spread", units="uJ")
def energy_spread(run, energy: "var#xgm.energy", pulses: "var#xgm.pulses"):
    """Train-to-train standard deviation; skipped when the XGM saw too few pulses to trust it."""
    if pulses < 20:
        raise Skip(f"only {pulses} pulses per train (need 20)")
    return float(energy.std())


@Variable(title="XGM/Energy histogram")
def energy_histogram(run, energy: "var#xgm.energy"):
    """Distribution of the per-train pulse energy (a matplotlib figure)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3))
    ax = fig.add_subplot()
    ax.hist(energy.values, bins=20, color="tab:blue")
    ax.set_xlabel("Pulse energy [uJ]")
    ax.set_ylabel("Trains")
    fig.tight_layout()
    return fig


# -- Sample motor ------------------------------------------------------------------------------


@Variable(title="Sample/X position", units="mm", tags=["motor"])
def sample_x(run):
    return float(run[MOTOR, "actualPosition"].ndarray().mean())


@Variable(title="Sample/X target", units="mm", tags=["motor"])
def sample_x_target(run):
    return float(run.get_run_value(MOTOR, "targetPosition"))


# -- Camera: a chain of dependencies -----------------------------------------------------------


@Variable(transient=True)
def camera_frames(run):
    """All camera frames as float32 (transient: only used by the variables below)."""
    return run[CAMERA, "data.image.pixels"].xarray().astype(np.float32)


@Variable(title="Camera/Mean image", units="counts", tags=["camera"])
def camera_image(run, frames: "var#camera_frames"):
    """Mean camera image over the run."""
    image = frames.mean("trainId")
    return image.rename({image.dims[0]: "y", image.dims[1]: "x"})


@Variable(title="Camera/Intensity", units="counts", summary="mean", tags=["camera"])
def camera_intensity(run, frames: "var#camera_frames"):
    """Background-subtracted camera intensity per train."""
    per_train = frames.sum(dim=frames.dims[1:])
    background = frames.isel({frames.dims[1]: slice(0, 4)}).mean() * np.prod(frames.shape[1:])
    return per_train - float(background)


@Variable(title="Camera/Spot centre", units="px", tags=["camera"])
def spot_centre(run, image: "var#camera_image"):
    """Centre of mass of the spot (x + iy, as a complex number)."""
    img = image.values - np.median(image.values)
    img[img < 0] = 0
    total = img.sum()
    if total == 0:
        raise Skip("no spot on the camera")
    yy, xx = np.indices(img.shape)
    return complex((img * xx).sum() / total, (img * yy).sum() / total)


@Variable(title="Camera/Yield per uJ", units="counts/uJ", tags=["camera"])
def yield_per_uj(run, intensity: "var#camera_intensity", energy: "var#xgm.mean_energy"):
    """Mean camera intensity normalised by the XGM energy (end of a three-step chain)."""
    return Cell(float(intensity.mean()) / energy, summary_value=round(float(intensity.mean()) / energy, 2))


@Variable(title="Camera/Spot quality", tags=["camera"])
def spot_quality(run, image: "var#camera_image"):
    """Peak-to-background ratio; green when the spot is clearly visible, red otherwise."""
    peak = float(image.max())
    background = float(np.median(image.values))
    ratio = peak / background if background else np.inf
    good = ratio > 2
    return Cell(ratio, bold=good, background="#b6e3b6" if good else "#f4b6b6")


@Variable(title="Camera/Profile", units="counts", tags=["camera"])
def camera_profile(run, image: "var#camera_image"):
    """Horizontal profile (sum over rows), with the mean image as preview."""
    profile = image.sum("y")
    return Cell(profile, preview=image)


# -- Processed data --------------------------------------------------------------------------


@Variable(title="Spectrometer/Peak energy", units="eV", data="proc", tags=["spectrometer"])
def spectrum_peak(run):
    """Photon energy at the maximum of the mean spectrum (from corrected data)."""
    if SPECTROMETER not in run.instrument_sources:
        raise Skip("no processed spectrometer data in this run")
    spectrum = run[SPECTROMETER, "data.spectrum"].ndarray().mean(axis=0)
    energy = run[SPECTROMETER, "data.photonEnergy"].ndarray()[0]
    return float(energy[np.argmax(spectrum)])


@Variable(title="Spectrometer/Mean spectrum", units="counts", data="proc", tags=["spectrometer"])
def mean_spectrum(run, peak: "var#spectrum_peak"):
    spectrum = run[SPECTROMETER, "data.spectrum"].ndarray().mean(axis=0)
    energy = run[SPECTROMETER, "data.photonEnergy"].ndarray()[0]
    return xr.DataArray(spectrum, dims=["energy"], coords={"energy": energy}, attrs={"units": "counts"})
