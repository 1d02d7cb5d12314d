#!/usr/bin/env bash
# The whole test suite from a fresh clone: creates .venv, installs the project with every extra
# from the lock and the system tools the tests use (Prometheus and promtool), then lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# Everything from the lock files in requirements/ (scripts/lock.sh refreshes them), hashes checked.
bash scripts/install.sh test
# wrk: the HTTP load generator of loadtests/bench.py (its smoke test runs in the suite);
# java: the JVM for the local Spark of tests/scoring (Debian's OpenJDK);
# chromium + chromium-driver: the headless browser of tests/protocol/rest/test_status_browser.py
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1 || ! command -v wrk >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus wrk openjdk-17-jre-headless chromium chromium-driver) >/dev/null
  else
    sudo sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus wrk openjdk-17-jre-headless chromium chromium-driver' >/dev/null
  fi
fi
# Azurite: the Azure Blob Storage emulator of tests/repository (tests/azurite.py), from the npm
# registry with the machine's Node.js (Debian's when there is none), pinned.
if ! [ -x .ci-tools/azurite/node_modules/.bin/azurite-blob ]; then
  if ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm) >/dev/null
    else
      sudo sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm' >/dev/null
    fi
  fi
  # About 360 MB: on a full disk the Azure test skips (with the reason) rather than failing the run.
  npm install --prefix .ci-tools/azurite --no-audit --no-fund --silent --omit=dev azurite@3.37.0 >/dev/null ||
    echo "scripts/test.sh: azurite could not be installed; tests/repository's Azure test will skip" >&2
fi
.venv/bin/ruff check serving tests loadtests scripts
.venv/bin/ruff format --check serving tests loadtests scripts
# strict on the package, its tests and the docs generators (loadtests/ are standalone scripts)
.venv/bin/mypy serving tests scripts
# The last line says how many checks against reference files (../shared, absent in a clone) were
# skipped and why (tests/references.py); under CI they must run, and a missing file fails instead.
report=$(mktemp)
trap 'rm -f "$report"' EXIT
status=0
# Several processes (pytest-xdist): most tests wait on servers they start. A module's tests stay
# on one process, in order (module-scoped servers start once; some modules' last test checks what
# the earlier ones did). SERVING_TEST_PROCESSES=0 runs serially.
processes=${SERVING_TEST_PROCESSES:-3}
xdist=(-n "$processes" --dist loadfile)
[ "$processes" = 0 ] && xdist=()
SERVING_REFERENCE_REPORT=$report .venv/bin/pytest -q -p no:cacheprovider "${xdist[@]}" "$@" || status=$?
cat "$report"
exit "$status"
