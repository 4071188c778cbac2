#!/usr/bin/env bash
# Set up a fresh Debian machine for mcuq: system packages, a venv in .venv, the package.
# Idempotent; run by ./demo and ./test. Usage: scripts/setup.sh [EXTRA] (examples, test)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# The cross compiler and QEMU build and run the firmware; clang with its runtime fuzzes the parser.
apt_packages=(python3 python3-venv python3-dev gcc gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
              clang libclang-rt-14-dev)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})) && command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "mcuq setup: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

extra=""; [ -n "${1:-}" ] && extra="[$1]"
stamp=".venv/.mcuq-installed$extra"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "mcuq setup: installing mcuq$extra into .venv (log: .venv/pip.log)" >&2
    if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e ".$extra"; } \
            >.venv/pip.log 2>&1; then
        tail -n 30 .venv/pip.log >&2
        echo "mcuq setup: pip install failed (full log: .venv/pip.log)" >&2
        exit 1
    fi
    touch "$stamp"
fi
