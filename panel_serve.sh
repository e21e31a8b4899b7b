#!/usr/bin/env bash
# Serve the DAMNIT dashboard. See `./panel_serve.sh --help`.
#
# Uses the project as installed in the active Python when it is there (no install, no network);
# otherwise bootstraps a virtual environment in .venv next to this script on first use.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"

has_stack() {
    "$1" -c "import panel, backend.storage.database, app.server.serve" >/dev/null 2>&1
}

if ! (cd "$HERE" && has_stack "$PY"); then
    VENV="$HERE/.venv"
    if [ ! -x "$VENV/bin/python" ] || ! (cd "$HERE" && has_stack "$VENV/bin/python"); then
        echo "panel_serve.sh: setting up $VENV (first run only; needs the package index)..." >&2
        "$PY" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e "$HERE[test]"
    fi
    PY="$VENV/bin/python"
fi

cd "$HERE"
exec "$PY" -m app.server.serve "$@"
