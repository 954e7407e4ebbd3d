#!/usr/bin/env bash
# Installs the PostgreSQL server from Debian packages when it is missing (tests and the sandbox need initdb).
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
  exit 0
fi
echo "PostgreSQL server not found: installing it from Debian packages…"
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "error: installing PostgreSQL needs root (apt-get install postgresql); run as root or install it first" >&2
  exit 1
fi
# pgmig makes its own clusters: do not let the package create and start a system-wide one.
$SUDO mkdir -p /etc/postgresql-common
echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql postgresql-contrib >/dev/null
ls /usr/lib/postgresql/*/bin/initdb
