"""Test infrastructure: the real components (Kafka, Slurm, supervisord, Chromium, nginx, the original DAMNIT)
started by the tests themselves, and waiting helpers."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the repository root
