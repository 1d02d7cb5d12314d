#!/usr/bin/env bash
# Build .venv from the lock files in requirements/ (written by scripts/lock.sh), hashes checked:
#   bash scripts/install.sh          runtime only: what `serving serve` needs (README's first command)
#   bash scripts/install.sh test     every extra: test clients, linters, exporters, rollout (scripts/test.sh)
#   bash scripts/install.sh batch    the runtime and one extra (also spark, rollout, export):
#                                    requirements/<extra>.txt, e.g. for `serving batch` (docs/batch.md)
# The checkout itself goes in editable, without dependencies: every third-party package comes from
# the lock, so a dependency missing there fails the tests instead of being resolved on the fly.
# Packages already in .venv stay; `rm -rf .venv` first for an environment that is exactly the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-runtime}
case "$profile" in
  runtime | test | batch | spark | rollout | export) ;;
  *) echo "usage: bash scripts/install.sh [runtime|test|batch|spark|rollout|export]" >&2; exit 2 ;;
esac
python3 -m venv .venv
# uv itself, pinned with its hashes; pip is used for this step and helm-sdkpy only.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --require-hashes -r requirements/uv.txt
# Bytecode is compiled at install, as pip does (uv does not by default): with
# PYTHONDONTWRITEBYTECODE set, as on CI machines, every import would otherwise compile from
# source again, and a cold interpreter takes 3x longer to import the test clients.
uv_pip() { .venv/bin/uv pip "$1" --quiet --compile-bytecode --python .venv/bin/python "${@:2}"; }
uv_pip install --require-hashes -r "requirements/$profile.txt"
uv_pip install --no-deps --build-constraints requirements/build.txt -e .
if [ "$profile" = test ]; then
  # The real Helm v4 engine for tests/deploy; the wheel declares Python 3.12 but runs on 3.11.
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --require-hashes \
    --ignore-requires-python -r requirements/helm.txt
fi
