#!/bin/bash
# Stop the daemons started by start-slurm.sh DIR (by their pid files) and wait until they are gone.
S=${1:?usage: stop-slurm.sh DIR}
for f in slurmd.pid slurmctld.pid slurmdbd.pid mysql/mysqld.pid munge/munged.pid; do
  [ -f "$S/$f" ] || continue
  pid=$(cat "$S/$f")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    echo "stopped $f"
  fi
  rm -f "$S/$f"
done
