#!/usr/bin/env bash
# The test command: seeds the real models into the Hugging Face cache (offline-capable), sets up a
# Jupyter client for the kernel and notebook tests (a venv in .venv), then runs every test. Tests
# whose resources are missing (../shared, the seeded models, Python) are listed as SKIPPED at the
# end; CI sets RAGTUNE_REQUIRE_REAL=1, which turns every such skip into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/seed-models.sh
export HF_HUB_OFFLINE=1

if [ -z "${RAGTUNE_PYTHON:-}" ] && command -v python3 >/dev/null; then
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv || echo "test.sh: cannot make a venv (python3-venv missing?); the kernel tests will skip"
  fi
  if [ -x .venv/bin/python ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check jupyter_client nbclient nbformat \
      && export RAGTUNE_PYTHON=$PWD/.venv/bin/python \
      || echo "test.sh: cannot install jupyter_client; the kernel tests will skip"
  fi
fi

skipped=target/tmp/skipped.txt
mkdir -p target/tmp && rm -f "$skipped"
status=0
cargo test --locked "$@" || status=$?
if [ -s "$skipped" ]; then
  echo
  echo "SKIPPED ($(wc -l < "$skipped") tests did not run; see each reason):"
  sort -u "$skipped" | sed 's/^/  /'
fi
exit $status
