#!/usr/bin/env bash
# ragtune on a CUDA GPU, in one call: parity with the CPU, then speed beside sentence-transformers
# on the same GPU. Two halves:
#
#   bash scripts/gpu-check.sh --prepare   # here (no GPU needed): build and pack what travels
#   bash scripts/gpu-check.sh             # on the GPU machine (no Rust, no network)
#
# --prepare builds the CUDA binaries (scripts/build-cuda.sh) and packs into target/gpu-check/
# (carried by the device tool: `carry: ["target/gpu-check"]`, under 64 MiB): the stripped,
# xz-compressed `ragtune` and tests/cuda.rs binaries; all-MiniLM-L6-v2's config and tokenizer
# files (its weights do not fit: the GPU side builds the same shape with random weights, which
# is all parity and speed need) — or, with REAL_WEIGHTS=1, its weights in f16 for the bf16
# quality check; SciFact's 5,183 documents as text, its train pairs, and (with REAL_WEIGHTS=1)
# the BEIR files for train-sub/dev.
#
# On the GPU machine it finds the CUDA 13 libraries (system toolkit or PyTorch's wheels), then:
#  1. parity: tests/cuda.rs against the CPU (embeddings, an MNRL step's loss and gradients, a
#     cross-encoder step, a LoRA step; f32, tolerance 1e-4), on the tiny test models and on the
#     MiniLM-shaped model;
#  2. encode the 5,183 documents, batch 32, max_seq_length 256: ragtune and sentence-transformers,
#     f32 (TF32 off) and bf16 (weights in bf16), docs/s — each after a warm-up run;
#  3. MNRL training at batch 32 and 128, f32 and bf16 (autocast over f32 weights, as bf16=True),
#     lr 2e-5: median seconds per step after the first two, both libraries;
#  4. with REAL_WEIGHTS=1: all-MiniLM-L6-v2 (f16-rounded) tuned on train-sub in f32 and in bf16,
#     dev NDCG@10 of each (the bf16 goal: within 0.005 of f32).
# Everything lands in $OUT (default target/gpu-check/out); the last line printed is one JSON
# object of figures. GPU_CHECK_DEVICE=cpu SMOKE=1 runs the GPU half here, on the CPU with a small
# slice of the data (a test of this script's plumbing, not a figure).
set -uo pipefail
cd "$(dirname "$0")/.."
pack=target/gpu-check
shared=${SHARED:-../shared}

if [ "${1:-}" = "--prepare" ]; then
  set -e
  bash scripts/build-cuda.sh
  snap=$(ls -d "${HF_HUB_CACHE:-$HOME/.cache/huggingface/hub}"/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/* | head -1)
  [ -n "$snap" ] || { echo "gpu-check: all-MiniLM-L6-v2 is not in the hub cache (scripts/seed-models.sh)" >&2; exit 1; }
  rm -rf "$pack/minilm" && mkdir -p "$pack/minilm/1_Pooling"
  for f in config.json config_sentence_transformers.json modules.json sentence_bert_config.json \
           special_tokens_map.json tokenizer.json tokenizer_config.json vocab.txt 1_Pooling/config.json; do
    cp "$snap/$f" "$pack/minilm/$f"
  done
  data=$shared/datasets/scifact
  python3 - "$data" "$pack" <<'EOF'
import json, sys
from pathlib import Path
data, pack = Path(sys.argv[1]), Path(sys.argv[2])
docs = {}
with open(pack / "docs.txt", "w", encoding="utf-8") as out:
    for line in open(data / "corpus.jsonl", encoding="utf-8"):
        d = json.loads(line)
        text = " ".join(f"{d.get('title', '')} {d['text']}".split())
        docs[d["_id"]] = text
        out.write(text + "\n")
queries = {json.loads(l)["_id"]: json.loads(l)["text"] for l in open(data / "queries.jsonl", encoding="utf-8")}
with open(pack / "pairs.jsonl", "w", encoding="utf-8") as out:
    for line in list(open(data / "qrels" / "train.tsv", encoding="utf-8"))[1:]:
        q, d, _ = line.rstrip("\n").split("\t")
        out.write(json.dumps({"anchor": queries[q], "positive": docs[d]}) + "\n")
EOF
  if [ "${REAL_WEIGHTS:-0}" = 1 ]; then
    /usr/bin/env python3 - "$snap/model.safetensors" "$pack/minilm-f16.safetensors" <<'EOF'
import sys
from safetensors.numpy import load_file, save_file
save_file({k: v.astype("float16") for k, v in load_file(sys.argv[1]).items()}, sys.argv[2])
EOF
    mkdir -p "$pack/scifact/qrels"
    cp "$data/corpus.jsonl" "$data/queries.jsonl" "$pack/scifact/"
    cp "$data/qrels/train-sub.tsv" "$data/qrels/dev.tsv" "$pack/scifact/qrels/"
  fi
  for f in docs.txt pairs.jsonl minilm-f16.safetensors scifact/corpus.jsonl scifact/queries.jsonl; do
    [ -f "$pack/$f" ] && xz -T2 -6 -f "$pack/$f"
  done
  echo "gpu-check: packed $(du -sh "$pack" | cut -f1) in $pack:" >&2
  ls -la "$pack" >&2
  exit 0
fi

# ── On the GPU machine ───────────────────────────────────────────────────────────────────────
out=${OUT:-$pack/out}
device=${GPU_CHECK_DEVICE:-cuda}
export GPU_CHECK_DEVICE=$device
smoke=${SMOKE:-0}
work=$(mktemp -d)
mkdir -p "$out"
began=$(date +%s)
say() { echo "[gpu-check $(( $(date +%s) - began )) s] $*" >&2; }
figures="$out/figures.jsonl"
: > "$figures"
put() { echo "{\"$1\": $2}" >> "$figures"; }  # put KEY JSON_VALUE
json_of() { grep -s '^{' "$1" | tail -1 | grep . || echo null; }  # a result file's JSON line, or null
finish() {
  python3 - "$figures" <<'EOF'
import json, sys
merged = {}
for line in open(sys.argv[1]):
    merged.update(json.loads(line))
print(json.dumps(merged))
EOF
}
trap finish EXIT

[ -f "$pack/ragtune.xz" ] || { put error '"no target/gpu-check: run --prepare first and carry it"'; exit 1; }
for f in "$pack"/*.xz "$pack"/scifact/*.xz; do [ -f "$f" ] && xz -dkc "$f" > "$work/$(basename "${f%.xz}")"; done
chmod +x "$work/ragtune" "$work/cuda-tests"
if [ "$smoke" = 1 ]; then
  head -n 64 "$work/docs.txt" > "$work/d" && mv "$work/d" "$work/docs.txt"
  head -n 300 "$work/pairs.jsonl" > "$work/p" && mv "$work/p" "$work/pairs.jsonl"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$out/gpu.txt"
put gpu "$(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read().strip()))' "$out/gpu.txt")"

# The CUDA 13 libraries the binaries link: the system's, else PyTorch's wheels.
dirs=""
for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libnvrtc.so.13 libcurand.so.10; do
  hit=$(ldconfig -p 2>/dev/null | awk -v l="$lib" '$1 == l {print $NF; exit}')
  if [ -z "$hit" ]; then
    roots="/usr/local/cuda /usr/local/cuda-13* /usr/lib/x86_64-linux-gnu $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null)"
    hit=$(find $roots -name "$lib*" 2>/dev/null | head -1)
  fi
  [ -n "$hit" ] && dirs="$dirs:$(dirname "$hit")"
done
export LD_LIBRARY_PATH="${dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
missing=$(ldd "$work/ragtune" | grep "not found" | awk '{print $1}' | tr '\n' ' ')
[ "$device" = cpu ] && missing=""
if [ -n "$missing" ]; then
  put error "\"CUDA libraries not found: $missing\""
  exit 1
fi
rt=("$work/ragtune" --device "$device")
"${rt[@]}" --help > /dev/null 2> "$out/start.err" || { put error "\"ragtune does not start: $(tail -1 "$out/start.err")\""; exit 1; }

model=$work/minilm-random
python3 scripts/gpu-st-reference.py random-model "$pack/minilm" "$model" > "$out/random-model.json" 2>> "$out/python.log"

say "1. parity (tests/cuda.rs)"
RAGTUNE_REPO=$PWD RAGTUNE_GPU_MODEL=$model RAGTUNE_REQUIRE_GPU=$([ "$device" = cpu ] && echo 0 || echo 1) HF_HUB_OFFLINE=1 \
  timeout 240 "$work/cuda-tests" --test-threads 1 --nocapture > "$out/parity.txt" 2>&1
rc=$?
put parity "{\"passed\": $([ $rc = 0 ] && echo true || echo false), \"summary\": $(grep -E '^test result' "$out/parity.txt" | tail -1 | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))')}"
grep -E "agree|differ|panicked" "$out/parity.txt" >&2

docs_per_s() { sed -n 's/.* \([0-9.]*\) docs\/s.*/\1/p' "$1" | tail -1; }
say "2. encoding $(wc -l < "$work/docs.txt") documents"
for dtype in f32 bf16; do
  for run in warm timed; do
    "${rt[@]}" encode --model "$model" --input "$work/docs.txt" --output "$work/emb.npy" --batch-size 32 --dtype "$dtype" 2> "$out/encode-$dtype-$run.log"
  done
  python3 scripts/gpu-st-reference.py encode "$model" "$work/docs.txt" "$dtype" 32 > "$out/st-encode-$dtype.json" 2>> "$out/python.log"
  put "encode_$dtype" "{\"ragtune_docs_per_s\": $(docs_per_s "$out/encode-$dtype-timed.log" | grep . || echo null), \"st\": $(json_of "$out/st-encode-$dtype.json")}"
done

say "3. MNRL training steps"
median_step() { python3 - "$1" <<'EOF'
import json, statistics, sys
t = [json.loads(l)["seconds"] for l in open(sys.argv[1]) if '"loss"' in l]
print(statistics.median([b - a for a, b in zip(t, t[1:])][1:]))
EOF
}
for batch in 32 128; do
  steps=$(( batch == 32 ? 24 : 12 ))
  [ "$smoke" = 1 ] && steps=4
  for dtype in f32 bf16; do
    run=$work/train-$batch-$dtype
    "${rt[@]}" train embed --model "$model" --data "$work/pairs.jsonl" --loss mnrl --batch-size "$batch" \
      --epochs 10 --max-steps "$steps" --lr 2e-5 --save-steps 100000 --precision "$dtype" --output "$run" \
      > "$out/train-$batch-$dtype.json" 2> "$out/train-$batch-$dtype.log"
    python3 scripts/gpu-st-reference.py train "$model" "$work/pairs.jsonl" "$dtype" "$batch" "$steps" > "$out/st-train-$batch-$dtype.json" 2>> "$out/python.log"
    put "train_b${batch}_$dtype" "{\"ragtune_s_per_step\": $(median_step "$run/train_log.jsonl" 2>/dev/null || echo null), \"st\": $(json_of "$out/st-train-$batch-$dtype.json")}"
  done
done

if [ -f "$work/minilm-f16.safetensors" ]; then
  say "4. bf16 against f32: all-MiniLM-L6-v2 tuned on SciFact train-sub, dev NDCG@10"
  real=$work/minilm-real
  cp -r "$pack/minilm" "$real" && cp "$work/minilm-f16.safetensors" "$real/model.safetensors"
  beir=$work/scifact && mkdir -p "$beir/qrels" && cp "$work/corpus.jsonl" "$work/queries.jsonl" "$beir/" && cp "$pack"/scifact/qrels/*.tsv "$beir/qrels/"
  for dtype in f32 bf16; do
    "${rt[@]}" train embed --model "$real" --data "$beir" --beir-split train-sub --loss mnrl --epochs 1 \
      --batch-size 32 --lr 2e-5 --warmup-ratio 0.1 --precision "$dtype" --dev-beir "$beir" --dev-split dev \
      --output "$work/real-$dtype" > "$out/real-$dtype.json" 2> "$out/real-$dtype.log"
  done
  put bf16_quality "$(python3 - "$out/real-f32.json" "$out/real-bf16.json" <<'EOF'
import json, sys
def final(path):
    return (json.load(open(path)).get("dev_after") or {}).get("ndcg@10")
a, b = final(sys.argv[1]), final(sys.argv[2])
print(json.dumps({"f32_ndcg@10": a, "bf16_ndcg@10": b, "difference": None if None in (a, b) else b - a}))
EOF
)"
fi
say "done"
