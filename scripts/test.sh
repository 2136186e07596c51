#!/usr/bin/env bash
# The test command: seeds the real models into the Hugging Face cache (offline-capable), then
# runs every test. Tests that need ../shared say SKIPPED when it is absent (outside CI).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/seed-models.sh
export HF_HUB_OFFLINE=1
cargo test --locked "$@"
