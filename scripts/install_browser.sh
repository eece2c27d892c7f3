#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the browser test (tests/integration/test_browser.py),
# from Debian's packages `chromium` and `chromium-driver` (the same build: versions always match).
# Run by `make test` / `make browser`; does nothing when both are already on PATH.
# Without root or apt-get it says what to install; the test then skips outside CI and fails in CI.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium and chromium-driver for the browser test (~1 min)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q chromium chromium-driver >/dev/null
  chromium --version
else
  echo "browser test: chromium/chromedriver not found and cannot install them here (needs root and apt-get);" >&2
  echo "  install Debian's 'chromium' and 'chromium-driver' packages (or put both on PATH)." >&2
fi
