#!/usr/bin/env bash
# Installs the PostgreSQL server from Debian packages when it is missing (tests and the sandbox need initdb).
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
  exit 0
fi
echo "PostgreSQL server not found: installing it from Debian packages…"
"$(dirname "$0")/apt-install.sh" postgresql postgresql-contrib
ls /usr/lib/postgresql/*/bin/initdb
