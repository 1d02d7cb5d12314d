#!/usr/bin/env bash
# Refresh the lock files in requirements/ from pyproject.toml. Run it after editing any dependency:
#   bash scripts/lock.sh                      keep every pin that still fits; add, drop or move what changed
#   bash scripts/lock.sh --upgrade            every package to the newest version the ranges allow
#   bash scripts/lock.sh --upgrade-package X  one package to its newest allowed version
#   bash scripts/lock.sh --check              exit 1 (and show the difference) when the lock files are stale
#
#   requirements/test.txt     every extra: what CI and `bash scripts/test.sh` install
#   requirements/runtime.txt  what `serving serve` needs: the image and the README's first command;
#                             the same versions as test.txt (constrained by it)
#   requirements/batch.txt    runtime.txt plus the 'batch' extra (pyarrow): the batch image
#                             (`docker build --build-arg LOCK=batch`), for `serving batch` jobs
#   requirements/spark.txt, rollout.txt, export.txt   runtime.txt plus that one extra
#   requirements/helm.txt     helm-sdkpy (declares Python >= 3.12 but runs on 3.11: pip installs it
#                             with --ignore-requires-python, which uv has no equivalent for)
#   requirements/uv.txt       the installer itself, at [tool.uv] required-version
#   requirements/build.txt    the build backend ([build-system] requires) for installing this checkout
# All with hashes, resolved for Python 3.11 on every platform. The uv used is .venv/bin/uv
# (installed by scripts/test.sh), or $UV.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
if ! [ -x "$UV" ] && ! command -v "$UV" >/dev/null 2>&1; then
  echo "lock.sh: no uv at $UV; run 'bash scripts/test.sh' once, or set UV=/path/to/uv" >&2
  exit 2
fi

check=0
args=()
for arg in "$@"; do
  if [ "$arg" = --check ]; then check=1; else args+=("$arg"); fi
done

out=requirements
if [ "$check" = 1 ]; then
  # Resolve again into a scratch copy (the committed pins are the preferences), then compare.
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
  cp requirements/*.txt "$out"/
fi
mkdir -p "$out"

uv_version=$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['tool']['uv']['required-version'].lstrip('='))")
common=(--quiet --generate-hashes --custom-compile-command "bash scripts/lock.sh")
compile() { "$UV" pip compile "${common[@]}" "${args[@]+"${args[@]}"}" "$@"; }

compile pyproject.toml --python-version 3.11 --universal --all-extras -o "$out/test.txt"
compile pyproject.toml --python-version 3.11 --universal -c "$out/test.txt" -o "$out/runtime.txt"
# One lock per extra (runtime plus that extra alone): the batch image, `bash scripts/install.sh
# <extra>`, and tests/test_extras_installed.py, which installs each into a fresh environment.
for extra in batch spark rollout export; do
  compile pyproject.toml --python-version 3.11 --universal --extra "$extra" -c "$out/test.txt" -o "$out/$extra.txt"
done
echo helm-sdkpy | compile - --python-version 3.12 --python-platform x86_64-manylinux_2_28 \
  -c "$out/test.txt" -o "$out/helm.txt"
echo "uv==$uv_version" | compile - --python-version 3.11 --no-deps -o "$out/uv.txt"
# The build backend that turns this checkout into an installed package (uv --build-constraints).
python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires']))" |
  compile - --python-version 3.11 -o "$out/build.txt"

if [ "$check" = 1 ]; then
  # Pins and markers, not hashes: a wheel uploaded later for a pinned version adds a hash but
  # changes nothing installed here.
  pins() { grep -E '^[A-Za-z0-9]' "$1" | sed -e 's/ *\\$//' | sort; }
  stale=0
  for f in test runtime batch spark rollout export helm uv build; do
    if ! diff -u --label "requirements/$f.txt" --label "pyproject.toml resolved" \
      <(pins "requirements/$f.txt") <(pins "$out/$f.txt"); then
      stale=1
    fi
  done
  if [ "$stale" = 1 ]; then
    echo "lock.sh: requirements/ does not match pyproject.toml; run: bash scripts/lock.sh" >&2
    exit 1
  fi
  echo "lock.sh: requirements/ matches pyproject.toml"
fi
