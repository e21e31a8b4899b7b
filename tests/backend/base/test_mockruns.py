"""The mock runs must be found by extra-data and carry distinct, non-zero values per run."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import h5py
import numpy as np
import pytest

from backend.base import mockruns


def _open(proposal, run, data="raw"):
    import extra_data

    return extra_data.open_run(proposal, run, data=data)


def test_layout_and_open_run(make_mock_runs, mock_data_root):
    pdir = make_mock_runs(2345, [1, 2])
    assert pdir == mock_data_root / "SPB" / "202501" / "p002345"
    assert (pdir / "raw" / "r0001" / "RAW-R0001-DA01-S00000.h5").is_file()
    assert not (pdir / "proc").exists()
    run = _open(2345, 2)
    assert {mockruns.XGM_ID, f"{mockruns.XGM_ID}:output", mockruns.MOTOR_ID,
            f"{mockruns.CAMERA_ID}:daqOutput"} <= run.all_sources
    assert len(run.train_ids) == 50
    assert run.run_metadata()["proposalNumber"] == 2345
    assert run.run_metadata()["runNumber"] == 2


def test_values_are_nonzero_and_vary_by_run(make_mock_runs):
    make_mock_runs(2345, [1, 2, 3])
    flux, spots, motor = [], [], []
    for r in (1, 2, 3):
        run = _open(2345, r)
        energy = run[mockruns.XGM_ID, "pulseEnergy.photonFlux"].ndarray()
        assert np.all(energy > 0)
        flux.append(energy.mean())
        pulses = run[f"{mockruns.XGM_ID}:output", "data.intensityTD"].ndarray()
        npulses = int(run[mockruns.XGM_ID, "pulseEnergy.nummberOfBunches"].ndarray()[0])
        assert np.all(pulses[:, :npulses] > 0) and np.all(pulses[:, npulses:] == 0)
        img = run[f"{mockruns.CAMERA_ID}:daqOutput", "data.image.pixels"].ndarray()
        assert img.shape == (50, 64, 48) and img.dtype == np.uint16
        assert img.min() > 0 and img.max() > 2 * np.median(img)  # a bright spot on a background
        spots.append(np.unravel_index(img.mean(axis=0).argmax(), img.shape[1:]))
        motor.append(run.get_run_value(mockruns.MOTOR_ID, "actualPosition"))
    assert len(set(np.round(flux, 1))) == 3
    assert len(set(spots)) == 3
    assert motor == sorted(motor) and motor[2] - motor[0] == pytest.approx(0.5, abs=0.01)


def test_train_timestamps_give_increasing_start_times(make_mock_runs):
    make_mock_runs(2345, [4, 5])
    starts = []
    for r in (4, 5):
        ts = _open(2345, r).select_trains(np.s_[:1]).train_timestamps()[0]
        starts.append(np.datetime64(ts, "us").item().replace(tzinfo=timezone.utc).timestamp())
    assert starts[0] == mockruns.BASE_START_TIME + 3 * mockruns.RUN_SPACING_S
    assert starts[1] - starts[0] == mockruns.RUN_SPACING_S
    assert datetime.fromtimestamp(starts[0], timezone.utc).year == 2025


def test_proc_data(make_mock_runs):
    make_mock_runs(2345, [7], with_proc=True)
    proc = _open(2345, 7, data="proc")
    assert proc.all_sources == {f"{mockruns.SPECTROMETER_ID}:output"}
    spectrum = proc[f"{mockruns.SPECTROMETER_ID}:output", "data.spectrum"].ndarray()
    assert spectrum.shape == (50, mockruns.SPECTRUM_BINS) and spectrum.max() > 100
    both = _open(2345, 7, data="all")
    assert f"{mockruns.SPECTROMETER_ID}:output" in both.all_sources
    assert mockruns.XGM_ID in both.all_sources


def test_reproducible_with_default_seed(tmp_path):
    a = mockruns.make_run(tmp_path / "a", 1, 3)
    b = mockruns.make_run(tmp_path / "b", 1, 3)


    key = f"INSTRUMENT/{mockruns.CAMERA_ID}:daqOutput/data/image/pixels"
    with h5py.File(next(a.glob("*.h5"))) as fa, h5py.File(next(b.glob("*.h5"))) as fb:
        assert np.array_equal(fa[key][:], fb[key][:])


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="ntrains"):
        mockruns.make_run(tmp_path, 1, 1, ntrains=0)
    with pytest.raises(ValueError, match="run"):
        mockruns.make_run(tmp_path, 1, 0)


def test_cli(tmp_path):
    out = subprocess.run([sys.executable, "-m", "backend.base.mockruns", str(tmp_path), "99", "1-3", "5",
                          "--proc", "--ntrains", "20", "--instrument", "FXE"],
                         capture_output=True, text=True, check=True).stdout
    pdir = tmp_path / "FXE" / "202501" / "p000099"
    assert str(pdir) in out
    assert sorted(p.name for p in (pdir / "raw").iterdir()) == ["r0001", "r0002", "r0003", "r0005"]
    assert sorted(p.name for p in (pdir / "proc").iterdir()) == ["r0001", "r0002", "r0003", "r0005"]
    bad = subprocess.run([sys.executable, "-m", "backend.base.mockruns", str(tmp_path), "99", "x"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "bad run number" in bad.stderr


# -- instrument runs -------------------------------------------------------------------------------


@pytest.mark.parametrize("instrument", sorted(mockruns.INSTRUMENTS))
def test_instrument_run_has_the_instruments_sources(instrument, mock_data_root):
    import extra_data

    setup = mockruns.INSTRUMENTS[instrument]
    raw_dir = mockruns.make_instrument_run(mock_data_root, 3456, 2, instrument, ntrains=6)
    assert raw_dir == mock_data_root / instrument / "202501" / "p003456" / "raw" / "r0002"
    run = extra_data.open_run(3456, 2, data="all" if setup.xtdf else "raw")
    expected = {*setup.xgms, *(f"{x}:output" for x in setup.xgms), *setup.attenuators, *setup.motors,
                *(f"{c}:daqOutput" for c in setup.cameras), *(f"{j}:daqOutput" for j in setup.jungfraus)}
    expected |= {s for s in (setup.timeserver, setup.undulator, setup.mono, setup.xtdf_control, setup.magnet,
                             setup.digitizer) if s}
    if setup.timeserver:
        expected.add(f"{setup.timeserver}:outputBunchPattern")
    if setup.digitizer:
        expected.add(f"{setup.digitizer}:network")
    if setup.epix:
        expected.add(f"{setup.epix}:daqOutput")
    if setup.xtdf:
        name = setup.xtdf[0]
        expected |= {f"{name}/DET/{m}CH0:xtdf" for m in range(4)} | {f"{name}/CORR/{m}CH0:output" for m in range(4)}
    assert expected <= run.all_sources, expected - run.all_sources
    assert len(run.train_ids) == 6
    for xgm in setup.xgms:
        energy = run[f"{xgm}:output", "data.intensityTD"].ndarray()
        npulses = mockruns.pulses_per_train(2)
        assert np.all(energy[:, :npulses] > 10) and np.all(energy[:, npulses:] == 1)
    for source in (*setup.motors, *setup.attenuators):
        key = "actualPosition" if source in setup.motors else "actual.transmission"
        assert np.all(run[source, key].ndarray() != 0)
    for jf in setup.jungfraus:
        assert run[f"{jf}:daqOutput", "data.adc"].ndarray().min() > 0


def test_instrument_runs_differ_by_run_and_show_signal_in_hit_trains(mock_data_root):
    import extra_data

    for r in (1, 2):
        mockruns.make_instrument_run(mock_data_root, 3456, r, "HED", ntrains=8)
    jf = "HED_IA1_JF500K1/DET/JNGFR01:daqOutput"
    images = {r: extra_data.open_run(3456, r)[jf, "data.adc"].ndarray().astype(float) for r in (1, 2)}
    assert not np.array_equal(images[1], images[2])
    hits = mockruns.signal_trains(3456, 1, 8)
    assert 0 < hits.sum() < 8
    bright = images[1].reshape(8, -1).max(axis=1)
    assert bright[hits].min() > bright[~hits].max() + 100


def test_instrument_run_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown instrument 'XYZ'"):
        mockruns.make_instrument_run(tmp_path, 1, 1, "XYZ")
    with pytest.raises(ValueError, match="ntrains"):
        mockruns.make_instrument_run(tmp_path, 1, 1, "SPB", ntrains=0)


def test_cli_instrument_sources(tmp_path):
    out = subprocess.run([sys.executable, "-m", "backend.base.mockruns", str(tmp_path), "99", "1-2",
                          "--ntrains", "4", "--instrument", "SQS", "--instrument-sources"],
                         capture_output=True, text=True, check=True).stdout
    pdir = tmp_path / "SQS" / "202501" / "p000099"
    assert str(pdir) in out
    with h5py.File(pdir / "raw" / "r0001" / "RAW-R0001-DA01-S00000.h5") as f:
        assert "INSTRUMENT/SQS_DIGITIZER_UTC1/ADC/1:network" in f
    bad = subprocess.run([sys.executable, "-m", "backend.base.mockruns", str(tmp_path), "99", "1",
                          "--instrument", "XMPL", "--instrument-sources"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--instrument-sources needs --instrument" in bad.stderr
