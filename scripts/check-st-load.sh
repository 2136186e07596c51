#!/usr/bin/env bash
# Checks that Python sentence-transformers loads a folder written by `ragtune train embed` and
# embeds exactly as ragtune does: same dimension, cosine of every pair of embeddings >= 0.99999.
#
#   REF_PYTHON=/path/to/venv/bin/python bash scripts/check-st-load.sh [MODEL_DIR]
#
# REF_PYTHON needs sentence-transformers. Without MODEL_DIR, all-MiniLM-L6-v2 is first fine-tuned
# for 3 MNRL steps on SciFact (SCIFACT, default ../shared/datasets/scifact) so that the weights
# differ from the base model's. Texts compared: 200 SciFact documents and 50 queries.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${REF_PYTHON:?set REF_PYTHON to a Python with sentence-transformers}"
data=${SCIFACT:-../shared/datasets/scifact}
[ -f "$data/corpus.jsonl" ] || { echo "check-st-load: no $data/corpus.jsonl (set SCIFACT)"; exit 1; }
bash scripts/seed-models.sh >/dev/null
export HF_HUB_OFFLINE=1
cargo build --release --quiet
bin=target/release/ragtune
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

model=${1:-}
if [ -z "$model" ]; then
  model=$work/tuned
  "$bin" train embed --model sentence-transformers/all-MiniLM-L6-v2 --data "$data" \
    --beir-split train-sub --loss mnrl --max-steps 3 --batch-size 16 --lr 1e-4 \
    --output "$model" > /dev/null 2> "$work/train.log" \
    || { echo "check-st-load: training failed:"; tail -3 "$work/train.log"; exit 1; }
fi

python3 - "$data" "$work/texts.jsonl" <<'PY'
import json, sys
data, out = sys.argv[1:]
texts = []
with open(f"{data}/corpus.jsonl") as f:
    for line in f:
        if line.strip() and len(texts) < 200:
            d = json.loads(line)
            texts.append((d.get("title", "") + " " + d.get("text", "")).strip())
with open(f"{data}/queries.jsonl") as f:
    for line in f:
        if line.strip() and len(texts) < 250:
            texts.append(json.loads(line)["text"])
with open(out, "w") as o:
    for t in texts:
        o.write(json.dumps({"text": t}) + "\n")
PY
"$bin" encode --model "$model" --input "$work/texts.jsonl" --output "$work/ragtune.npy" 2> "$work/encode.log" \
  || { echo "check-st-load: ragtune encode failed:"; tail -3 "$work/encode.log"; exit 1; }

"$REF_PYTHON" - "$model" "$work/texts.jsonl" "$work/ragtune.npy" <<'PY'
import json, sys
import numpy as np
from sentence_transformers import SentenceTransformer
model_dir, texts_path, ours_path = sys.argv[1:]
texts = [json.loads(l)["text"] for l in open(texts_path)]
st = SentenceTransformer(model_dir, device="cpu")
theirs = st.encode(texts, batch_size=32, convert_to_numpy=True)
ours = np.load(ours_path)
assert ours.shape == theirs.shape, f"shapes differ: ragtune {ours.shape}, sentence-transformers {theirs.shape}"
cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
print(f"check-st-load: SentenceTransformer({model_dir!r}) loaded {st}")
print(f"check-st-load: {len(texts)} texts, dim {ours.shape[1]}: min cosine {cos.min():.7f}, "
      f"max |difference| {np.abs(ours - theirs).max():.2e}")
if cos.min() < 0.99999:
    sys.exit("check-st-load: FAILED, embeddings differ")
print("check-st-load: OK")
PY
