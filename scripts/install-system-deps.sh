#!/bin/bash
# Install the Debian 12 packages the project and its tests need (as root; safe to re-run).
#   slurm-wlm slurm-client munge   one-node Slurm for `damnit listen` job submission and its tests
#   chromium fonts-*               headless browser for the dashboard tests (driven by Playwright)
#   nginx                          optional reverse proxy in front of the dashboard
#   python3 python3-venv           when no other Python 3.10+ is available
#   tzdata                         the time zones the dashboard shows times in (zoneinfo reads them)
# WITH_DBD=1 also installs slurmdbd + MariaDB, needed only for `sacct`.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" != 0 ]; then
  echo "install-system-deps.sh: run as root (apt-get)" >&2
  exit 1
fi
packages=(
  ca-certificates procps git tzdata
  python3 python3-venv python3-pip
  slurm-wlm slurm-client munge
  chromium fonts-dejavu-core fonts-liberation
  nginx
)
if [ "${WITH_DBD:-0}" = 1 ]; then packages+=(slurmdbd mariadb-server); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} = 0 ]; then
  echo "system packages already installed"
  exit 0
fi
echo "installing: ${missing[*]}"
# Daemons are started by the tests themselves; keep package scripts from starting services.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -q
apt-get install -y -q "${missing[@]}" </dev/null
