#!/bin/bash
# Stop the daemons started by start-slurm.sh DIR (by their pid files) and wait until they are gone.
# All get SIGTERM at once (each takes 1-2 s to exit); stragglers get SIGKILL after 10 s.
S=${1:?usage: stop-slurm.sh DIR}
pids=()
for f in slurmd.pid slurmctld.pid slurmdbd.pid mysql/mysqld.pid munge/munged.pid; do
  [ -f "$S/$f" ] || continue
  pid=$(cat "$S/$f")
  kill "$pid" 2>/dev/null && { pids+=("$pid"); echo "stopping $f ($pid)"; }
  rm -f "$S/$f"
done
for _ in $(seq 100); do
  alive=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && exit 0
  sleep 0.1
done
for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null && echo "killed $pid (did not stop in 10 s)"; done
exit 0
