#!/usr/bin/env bash
# Reranker training and scoring, ragtune vs sentence-transformers 6 (PyTorch, 2 threads), on
# SciFact in one session, like for like: the same initial folder (all-MiniLM-L6-v2 with a fresh
# one-label head, written by ragtune), the same mined data, the same settings, the same pairs.
#
#   REF_PYTHON=/path/to/venv/bin/python bash scripts/bench-rerank.sh [WORK_DIR]
#
# 1. The retriever: all-MiniLM-L6-v2 fine-tuned with MNRL on qrels/train-sub.tsv (1 epoch, batch 32,
#    lr 2e-5, warm-up 0.1), as scripts/bench-train.sh; its dev NDCG@10 is the bar to beat.
# 2. Data: 5 negatives per train-sub pair mined with that retriever (ranks 10-100, max score 0.85,
#    top), as (query, document, label) pairs.
# 3. Parity: BinaryCrossEntropyLoss (pos_weight unset), 1 epoch, batch 16, lr 2e-5, warm-up 0.1,
#    max_length 256, seed 42, trained by each tool; both results are scored by the same evaluator
#    (`ragtune eval rerank`: the retriever's top-100 of every dev query, reranked), whose
#    cross-encoder scores equal sentence-transformers' (tests/rerank.rs).
# 4. Speed: 100 candidates for each of 20 dev queries (the same pairs file for both), batch 32,
#    max_length 256: pairs/s and peak RSS; training seconds per step and peak RSS.
# Without REF_PYTHON only ragtune is measured. WORK_DIR keeps the intermediate files (default: a
# temporary folder); steps whose output exists there are not redone. RAGTUNE_BIN names a ragtune
# binary to use instead of building the release one. STEPS=N trains each tool for N steps only and
# skips the quality evaluation: a speed run.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${SCIFACT:-../shared/datasets/scifact}
[ -f "$data/corpus.jsonl" ] || { echo "bench-rerank: no $data/corpus.jsonl (set SCIFACT)"; exit 1; }
. scripts/bench-lib.sh
work=${1:-}
if [ -z "$work" ]; then work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; fi
mkdir -p "$work"
model=sentence-transformers/all-MiniLM-L6-v2
timed() { local out=$1; shift; /usr/bin/time -f "%e %M" -o "$out" "$@"; }

if [ ! -f "$work/bi/model.safetensors" ]; then
  "$bin" train embed --model "$model" --data "$data" --beir-split train-sub --loss mnrl --epochs 1 \
    --batch-size 32 --lr 2e-5 --warmup-ratio 0.1 --save-steps 1000 --output "$work/bi" > /dev/null 2> "$work/bi.log"
fi
if [ ! -f "$work/pairs.jsonl" ]; then
  "$bin" mine --model "$work/bi" --data "$data" --beir-split train-sub --corpus "$data" --num-negatives 5 \
    --range-min 10 --range-max 100 --max-score 0.85 --sampling top --output-format labeled-pair \
    --output "$work/pairs.jsonl" --cache-dir "$work/cache" 2> "$work/mine.log"
fi
# The initial folder both tools start from: MiniLM with ragtune's seeded fresh head, max_length 256.
echo '{"query": "q", "document": "d"}' > "$work/probe.jsonl"
"$bin" rerank --model "$model" --input "$work/probe.jsonl" --output "$work/probe-scores.jsonl" \
  --max-length 256 --save-model "$work/ce0" 2> "$work/ce0.log"

# Dropout 0.1 as sentence-transformers trains (ragtune's reranker default is 0).
settings=(--loss bce --epochs 1 --batch-size 16 --lr 2e-5 --warmup-ratio 0.1 --max-length 256 --seed 42 --dropout 0.1)
steps=${STEPS:-}
[ -n "$steps" ] && settings+=(--max-steps "$steps")
rm -rf "$work/rt"
timed "$work/rt.time" "$bin" train rerank --model "$work/ce0" --data "$work/pairs.jsonl" "${settings[@]}" \
  --save-steps 100000 --output "$work/rt" > "$work/rt.json" 2> "$work/rt.log"
evaluate() {
  "$bin" eval rerank --retriever "$work/bi" --reranker "$1" --beir "$data" --split dev --top-k 100 \
    --max-length 256 --cache-dir "$work/evalcache" --json 2> /dev/null
}
if [ -z "$steps" ]; then evaluate "$work/rt" > "$work/rt-dev.json"; else echo '{}' > "$work/rt-dev.json"; fi
python3 - "$work/rt.json" "$work/rt.time" "$work/rt-dev.json" <<'PY'
import json, sys
o, (s, kb), d = json.load(open(sys.argv[1])), open(sys.argv[2]).read().split(), json.load(open(sys.argv[3]))
line = (f"ragtune BCE: {o['steps']} steps, {o['seconds_per_step']:.2f} s/step, final loss {o['final_loss']:.4f}, "
        f"peak RSS {int(kb) // 1024} MB")
if d:
    r, k = d["retriever"], d["reranked"]
    print(f"retriever (tuned MiniLM) dev: ndcg@10 {r['ndcg@10']:.4f}, mrr@10 {r['mrr@10']:.4f}, map@100 {r['map@100']:.4f}")
    line += f"; reranked top-100 dev ndcg@10 {k['ndcg@10']:.4f}, mrr@10 {k['mrr@10']:.4f}, map@100 {k['map@100']:.4f}"
print(line)
PY

if [ -n "${REF_PYTHON:-}" ]; then
  ref=scripts/st-rerank-reference.py
  rm -rf "$work/st"
  "$REF_PYTHON" "$ref" train --init "$work/ce0" --data "$work/pairs.jsonl" --out "$work/st" --epochs 1 \
    --batch-size 16 --lr 2e-5 --warmup-ratio 0.1 --max-length 256 --seed 42 --max-steps "${steps:-0}" \
    2> "$work/st.log" | tail -1 > "$work/st.json"
  if [ -z "$steps" ]; then evaluate "$work/st" > "$work/st-dev.json"; else echo '{}' > "$work/st-dev.json"; fi
  python3 - "$work/st.json" "$work/st-dev.json" "$work/rt.json" <<'PY'
import json, sys
o, d, rt = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
line = (f"sentence-transformers BCE: {o['steps']} steps, {o['seconds_per_step']:.2f} s/step "
        f"(ragtune {o['seconds_per_step'] / rt['seconds_per_step']:.2f}x), train loss {o['train_loss']:.4f}, "
        f"peak RSS {o['peak_rss_mb']:.0f} MB")
if d:
    k = d["reranked"]
    line += f"; reranked top-100 dev ndcg@10 {k['ndcg@10']:.4f}, mrr@10 {k['mrr@10']:.4f}, map@100 {k['map@100']:.4f}"
print(line)
PY
  [ -f "$work/pairs20.jsonl" ] || "$REF_PYTHON" "$ref" candidates --retriever "$work/bi" --beir "$data" --split dev \
    --queries 20 --top-k 100 --out "$work/pairs20.jsonl" > /dev/null 2>&1
  "$REF_PYTHON" "$ref" score --model "$work/rt" --pairs "$work/pairs20.jsonl" --batch-size 32 --max-length 256 \
    2> /dev/null | tail -1 > "$work/st-score.json"
fi
if [ -f "$work/pairs20.jsonl" ]; then
  timed "$work/rt-score.time" "$bin" rerank --model "$work/rt" --input "$work/pairs20.jsonl" \
    --output "$work/rt-scores.jsonl" --batch-size 32 --max-length 256 2> "$work/rt-score.log"
  python3 - "$work/rt-score.log" "$work/rt-score.time" "$work/st-score.json" <<'PY'
import json, os, re, sys
log, (wall, kb) = open(sys.argv[1]).read(), open(sys.argv[2]).read().split()
n, s = re.search(r"scored (\d+) rows .* in ([\d.]+) s", log).groups()
rt = int(n) / float(s)
line = f"scoring {n} pairs (20 dev queries x top-100, batch 32, max_length 256): ragtune {rt:.1f} pairs/s, peak RSS {int(kb) // 1024} MB"
if os.path.getsize(sys.argv[3]):
    st = json.load(open(sys.argv[3]))
    line += f"; sentence-transformers {st['pairs_per_second']:.1f} pairs/s, peak RSS {st['peak_rss_mb']:.0f} MB; {rt / st['pairs_per_second']:.2f}x"
print(line)
PY
fi
