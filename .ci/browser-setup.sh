#!/usr/bin/env bash
# Install what tests/test_report_browser.py needs: Debian's Chromium (/usr/bin/chromium) and the
# Python `playwright` package, which drives that Chromium through `executablePath`.
# Playwright's own browser download (`playwright install`) is deliberately never used.
#
#   bash .ci/browser-setup.sh                 # uses $PYTHON, else ./venv or /work/venv, else python3
#   pytest -m browser tests/test_report_browser.py
set -euo pipefail

if [ -z "${PYTHON:-}" ]; then
    for candidate in "${VIRTUAL_ENV:-}/bin/python" ./venv/bin/python /work/venv/bin/python; do
        if [ -x "$candidate" ]; then PYTHON="$candidate"; break; fi
    done
fi
PYTHON="${PYTHON:-python3}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "browser-setup: apt-get needs root; run as root or install sudo" >&2; exit 1
    fi
fi

if [ ! -x /usr/bin/chromium ]; then
    echo "browser-setup: installing Debian chromium" >&2
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core
else
    echo "browser-setup: /usr/bin/chromium already present" >&2
fi

echo "browser-setup: installing the playwright Python package into $PYTHON" >&2
"$PYTHON" -m pip install --quiet "playwright>=1.40"

/usr/bin/chromium --version
"$PYTHON" -c "import playwright, importlib.metadata as m; print('playwright', m.version('playwright'))"
