#!/usr/bin/env bash
# Installs pgcopydb from Debian packages when it is missing: the benchmark compares pgmig against it.
# A failure here is not fatal for the benchmark, which then reports pgcopydb as unavailable.
set -uo pipefail
if command -v pgcopydb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pgcopydb >/dev/null 2>&1; then
  exit 0
fi
echo "pgcopydb not found: installing it from Debian packages…"
"$(dirname "$0")/../scripts/apt-install.sh" pgcopydb || echo "warning: pgcopydb not installed; the benchmark skips it" >&2
exit 0
