#!/bin/bash
# Start a one-node Slurm cluster (munge + slurmctld + slurmd, optionally slurmdbd + MariaDB) in DIR,
# as root, without systemd. Usage: start-slurm.sh DIR
# Environment: SLURMCTLD_PORT (16817), SLURMD_PORT (16818), WITH_DBD=1 to also start slurmdbd on
# SLURMDBD_PORT (16819) with MariaDB on MYSQL_PORT (13306) so that sacct works (needs slurmdbd and
# mariadb-server installed). Prints the SLURM_CONF to export; exits non-zero with log tails on failure.
set -euo pipefail
S=$(realpath -m "${1:?usage: start-slurm.sh DIR}")
WITH_DBD=${WITH_DBD:-0}
CTLD_PORT=${SLURMCTLD_PORT:-16817}
SLURMD_PORT=${SLURMD_PORT:-16818}
DBD_PORT=${SLURMDBD_PORT:-16819}
MYSQL_PORT=${MYSQL_PORT:-13306}

fail() {
  echo "start-slurm.sh: $*" >&2
  for f in "$S"/log/*.log "$S"/munge/munged.log; do
    [ -f "$f" ] && { echo "--- tail of $f ---" >&2; tail -n 30 "$f" >&2; }
  done
  exit 1
}
for exe in munged mungekey slurmctld slurmd sinfo; do
  command -v $exe >/dev/null || fail "$exe not found: apt-get install -y slurm-wlm slurm-client munge"
done

mkdir -p "$S"/munge "$S"/state "$S"/spool "$S"/log "$S"/jobs
chmod 755 "$S" "$S"/munge   # munge refuses a socket directory others can write to
[ -f "$S"/munge/munge.key ] || mungekey --create --keyfile="$S"/munge/munge.key
chmod 600 "$S"/munge/munge.key
SOCK=$S/munge/munge.socket.2
munged --socket="$SOCK" --key-file="$S"/munge/munge.key --log-file="$S"/munge/munged.log \
       --pid-file="$S"/munge/munged.pid --seed-file="$S"/munge/munged.seed --force \
  || fail "munged did not start"

cat > "$S"/slurm.conf <<CONF
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge=300
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$S/slurm.conf

if [ "$WITH_DBD" = 1 ]; then
  for exe in slurmdbd mariadbd mariadb-install-db sacctmgr; do
    command -v $exe >/dev/null || fail "WITH_DBD=1 needs $exe: apt-get install -y slurmdbd mariadb-server"
  done
  D=$S/mysql; mkdir -p "$D"
  [ -d "$D"/data/mysql ] || mariadb-install-db --no-defaults --datadir="$D"/data --user=root \
      --auth-root-authentication-method=normal --skip-test-db >"$D"/install.log 2>&1 \
      || fail "mariadb-install-db failed (see $D/install.log)"
  mariadbd --no-defaults --datadir="$D"/data --user=root --port="$MYSQL_PORT" --bind-address=127.0.0.1 \
           --socket="$D"/mysqld.sock --pid-file="$D"/mysqld.pid --log-error="$S"/log/mariadb.log \
           --innodb-buffer-pool-size=64M >/dev/null 2>&1 &
  for _ in $(seq 150); do
    mariadb --no-defaults -S "$D"/mysqld.sock -uroot -e 'select 1' >/dev/null 2>&1 && break; sleep 0.1
  done
  mariadb --no-defaults -S "$D"/mysqld.sock -uroot -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' \
    IDENTIFIED BY 'slurmpw'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" \
    || fail "MariaDB did not come up"
  cat > "$S"/slurmdbd.conf <<CONF
AuthType=auth/munge
AuthInfo=socket=$SOCK
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MYSQL_PORT
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
LogFile=$S/log/slurmdbd.log
PidFile=$S/slurmdbd.pid
CONF
  chmod 600 "$S"/slurmdbd.conf
  cat >> "$S"/slurm.conf <<CONF
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$SOCK
JobAcctGatherType=jobacct_gather/linux
CONF
  slurmdbd || fail "slurmdbd did not start"
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$DBD_PORT") 2>/dev/null && break; sleep 0.1; done
  sacctmgr -i add cluster ci >/dev/null || fail "sacctmgr add cluster failed"
fi

slurmctld || fail "slurmctld did not start"
slurmd -N localhost || fail "slurmd did not start"   # the machine's hostname is not 'localhost'
for _ in $(seq 150); do
  sinfo -h -o %t 2>/dev/null | grep -q idle && { echo "slurm ready: export SLURM_CONF=$S/slurm.conf"; exit 0; }
  sleep 0.2
done
fail "the node did not become idle within 30 s (sinfo: $(sinfo -h -o '%t %E' 2>&1 | head -3))"
