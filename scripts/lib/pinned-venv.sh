#!/usr/bin/env bash
# Makes (once) a Python virtual environment holding pinned packages, and prints its interpreter's path
# on its last line; a complete environment (every `name==version` installed at that version) is reused
# at once. Shared by scripts/test-python.sh and scripts/reference/venv.sh.
#   bash scripts/lib/pinned-venv.sh VENV_DIR PACKAGE...
set -euo pipefail

VENV="$1"
shift
PY="$VENV/bin/python"

if [ -x "$PY" ] && "$PY" - "$@" <<'CHECK' 2>/dev/null; then
import sys
from importlib.metadata import version
pinned = [p.split("==") for p in sys.argv[1:] if "==" in p]
sys.exit(any(version(name) != wanted for name, wanted in pinned))
CHECK
  echo "$PY"
  exit 0
fi

python3 -m venv "$VENV" >&2
"$PY" -m pip install --quiet --disable-pip-version-check "$@" >&2
echo "$PY"
