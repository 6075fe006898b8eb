#!/usr/bin/env bash
# The browser test (tests/e2e/test_browser.py) drives Debian's headless Chromium through its
# chromedriver. `make test` runs this first: it installs both when either is missing and it may
# (root, or passwordless sudo), without asking anything (CI has no stdin).
set -euo pipefail
CHROMIUM=/usr/bin/chromium
DRIVER=/usr/bin/chromedriver
if [ -x "$CHROMIUM" ] && [ -x "$DRIVER" ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "make test needs $CHROMIUM and $DRIVER for the browser test; install them as root:" >&2
  echo "  apt-get update && apt-get install -y chromium chromium-driver" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get here: install Chromium and its chromedriver as $CHROMIUM and $DRIVER" >&2
  exit 1
fi
echo "==> installing chromium and chromium-driver (apt-get) for the browser test"
export DEBIAN_FRONTEND=noninteractive
# other apt runs on the machine hold the lock for a while: wait for it instead of failing
"${as_root[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
"${as_root[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
  chromium chromium-driver </dev/null
test -x "$CHROMIUM" && test -x "$DRIVER"
