#!/usr/bin/env bash
# apt-install.sh PACKAGE…: installs Debian packages as root or through sudo, without letting a
# PostgreSQL package create and start a system-wide cluster (pgmig makes its own).
set -euo pipefail
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "error: installing $* needs root (apt-get install $*)" >&2
  exit 1
fi
$SUDO mkdir -p /etc/postgresql-common
[ -e /etc/postgresql-common/createcluster.conf ] || \
  echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
apt-cache show "$@" >/dev/null 2>&1 || $SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
