#!/usr/bin/env bash
# Reranker training, step for step against sentence-transformers' CrossEncoderTrainer (a
# faithfulness check beside scripts/bench-rerank.sh, whose full-recipe comparison differs by
# the dropout masks and the data order each tool draws).
#
#   REF_PYTHON=/path/to/venv/bin/python bash scripts/check-rerank-steps.sh INIT_DIR PAIRS.jsonl [WORK_DIR]
#
# INIT_DIR: a cross-encoder folder both tools start from (e.g. the bench's `ce0`); PAIRS.jsonl:
# (query, document, label) rows, of which the first 16 are one batch. Both tools train 10 steps
# of BinaryCrossEntropyLoss on that batch (batch 16, lr 2e-5, warm-up 0.1, max_length 256) from
# a copy of INIT_DIR with dropout set to 0 in its config.json, which both tools read (their
# random masks cannot match; a batch that is the whole data set makes the order irrelevant). Prints each step's two losses, then the largest
# difference between the two trained models' logits on the next 200 rows' pairs.
set -euo pipefail
cd "$(dirname "$0")/.."
init=${1:?usage: check-rerank-steps.sh INIT_DIR PAIRS.jsonl [WORK_DIR]}
pairs=${2:?usage: check-rerank-steps.sh INIT_DIR PAIRS.jsonl [WORK_DIR]}
: "${REF_PYTHON:?set REF_PYTHON to a Python with sentence-transformers}"
. scripts/bench-lib.sh
work=${3:-}
if [ -z "$work" ]; then work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; fi
mkdir -p "$work"
rm -rf "$work/init" "$work/rt" "$work/st" "$work/st-trainer"
cp -r "$init" "$work/init"
python3 - "$work/init/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["hidden_dropout_prob"] = c["attention_probs_dropout_prob"] = 0.0
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY
head -n 16 "$pairs" > "$work/batch.jsonl"
sed -n 17,216p "$pairs" > "$work/probe.jsonl"
settings=(--epochs 10 --batch-size 16 --lr 2e-5 --warmup-ratio 0.1 --max-length 256 --seed 42)
"$bin" train rerank --model "$work/init" --data "$work/batch.jsonl" --loss bce "${settings[@]}" \
  --save-steps 1000 --output "$work/rt" > /dev/null 2> "$work/rt.log"
"$REF_PYTHON" scripts/st-rerank-reference.py train --init "$work/init" --data "$work/batch.jsonl" \
  --out "$work/st" "${settings[@]}" --logging-steps 1 2> "$work/st.log" | tail -1 > "$work/st.json"
for m in rt st; do
  "$bin" rerank --model "$work/$m" --input "$work/probe.jsonl" --output "$work/$m-scores.jsonl" \
    --activation none --max-length 256 2> /dev/null
done
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
ours = [r for r in map(json.loads, open(f"{w}/rt/train_log.jsonl")) if r["kind"] == "loss"]
theirs = dict(json.load(open(f"{w}/st.json"))["logged"])
print("step  ragtune     sentence-transformers")
for r in ours:
    print(f"{r['step']:>4}  {r['loss']:.7f}  {theirs.get(r['step'], float('nan')):.7f}")
a, b = ([json.loads(l)["score"] for l in open(f"{w}/{m}-scores.jsonl")] for m in ("rt", "st"))
print(f"trained models' logits on {len(a)} other pairs: max |ragtune - sentence-transformers| = "
      f"{max(abs(x - y) for x, y in zip(a, b)):.2e}")
PY
