#!/usr/bin/env bash
# Serve the DAMNIT dashboard. See `./panel_serve.sh --help`.
#
# Uses the project as installed in the active Python when it is there (no install, no network);
# otherwise sets up a virtual environment in .venv next to this script on first use (about two minutes,
# from the package index), which also holds the `damnit` command (.venv/bin/damnit).
# Call it by its path from anywhere: relative paths in its arguments are taken from where you are.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
# This checkout's code, whichever Python runs it.
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"

# The project's dependencies (pyproject.toml), looked up without importing them: importing Panel alone
# would cost a second of every start.
STACK="numpy h5py xarray netCDF4 h5netcdf pandas extra_data aiokafka supervisor panel holoviews bokeh param
       tqdm pyflakes openpyxl tabulate matplotlib PIL pyarrow adbc_driver_sqlite"
has_stack() {
    # shellcheck disable=SC2086
    "$1" -c 'import importlib.util as u, sys
sys.exit(sys.version_info < (3, 10) or any(u.find_spec(m) is None for m in sys.argv[1:]))' $STACK >/dev/null 2>&1
}

die() {
    echo "panel_serve.sh: $*" >&2
    exit 1
}

if ! has_stack "$PY"; then
    VENV="$HERE/.venv"
    if [ ! -x "$VENV/bin/python" ] || ! has_stack "$VENV/bin/python"; then
        command -v "$PY" >/dev/null || die "no '$PY' found: install Python 3.10 or newer (or set PYTHON=/path/to/python3)"
        "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
            || die "$("$PY" -V 2>&1) is too old: Python 3.10 or newer is needed (set PYTHON=/path/to/python3.X)"
        LOG="$(mktemp "${TMPDIR:-/tmp}/damnit-venv-install.XXXXXX.log")"
        echo "panel_serve.sh: setting up $VENV (first run only): the project and its dependencies," >&2
        echo "  about two minutes and 1 GB from the package index (details in $LOG)" >&2
        if [ ! -x "$VENV/bin/python" ]; then
            "$PY" -m venv "$VENV" >"$LOG" 2>&1 || {
                cat "$LOG" >&2
                rm -rf "$VENV"
                die "could not create $VENV with $PY; on Debian/Ubuntu: sudo apt-get install python3-venv"
            }
        fi
        if ! { "$VENV/bin/python" -m pip install --upgrade pip \
               && "$VENV/bin/python" -m pip install -e "$HERE[test]"; } >>"$LOG" 2>&1; then
            tail -n 30 "$LOG" >&2
            die "installing into $VENV failed (full log: $LOG); run this script again once fixed"
        fi
        mv "$LOG" "$VENV/install.log"
        echo "panel_serve.sh: installed (log: $VENV/install.log). The 'damnit' command is $VENV/bin/damnit;" >&2
        echo "  to have it and panel_serve.sh on your PATH: export PATH=\"$HERE:$VENV/bin:\$PATH\"" >&2
    fi
    PY="$VENV/bin/python"
fi

exec "$PY" -m app.server.serve "$@"
