#!/usr/bin/env bash
# Usage: ensure-packages.sh COMMAND:DEBIAN_PACKAGE ...
# Installs the Debian package of every missing command when it can (root or sudo);
# otherwise stops with a one-line instruction.
set -euo pipefail

missing=()
for pair in "$@"; do
    command="${pair%%:*}"
    package="${pair#*:}"
    command -v "$command" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "perfpulse: missing system packages; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "perfpulse: missing system packages (${missing[*]}); install them with your package manager" >&2
    exit 1
fi
echo "perfpulse: installing ${missing[*]} (Debian packages)"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
