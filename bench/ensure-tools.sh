#!/usr/bin/env bash
# Installs pgcopydb from Debian packages when it is missing: the benchmark compares pgmig against it.
# A failure here is not fatal for the benchmark, which then reports pgcopydb as unavailable.
set -euo pipefail
if command -v pgcopydb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pgcopydb >/dev/null 2>&1; then
  exit 0
fi
echo "pgcopydb not found: installing it from Debian packages…"
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "warning: installing pgcopydb needs root (apt-get install pgcopydb); the benchmark will skip it" >&2
  exit 0
fi
# Do not let a PostgreSQL package pulled in as a dependency create and start a system-wide cluster.
$SUDO mkdir -p /etc/postgresql-common
[ -e /etc/postgresql-common/createcluster.conf ] || \
  echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
if ! apt-cache show pgcopydb >/dev/null 2>&1; then
  $SUDO apt-get update -qq
fi
if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends pgcopydb >/dev/null; then
  echo "warning: apt-get install pgcopydb failed; the benchmark will skip it" >&2
fi
exit 0
