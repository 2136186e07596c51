#!/usr/bin/env bash
# ragtune on a CUDA GPU, in one call: parity with the CPU, speed beside sentence-transformers on
# the same GPU, and bf16 training quality against f32. Two halves:
#
#   bash scripts/gpu-check.sh --prepare   # here (no GPU needed): build and pack what travels
#   bash scripts/gpu-check.sh             # on the GPU machine (no Rust, no network)
#
# --prepare builds the CUDA binaries (scripts/build-cuda.sh) and packs into target/gpu-check/
# (carried by the device tool: `carry: ["target/gpu-check"]`, under 64 MiB with the repo):
#   - bins.tar.xz: the stripped `ragtune` and tests/cuda.rs binaries in one solid archive (30 MB);
#   - all-MiniLM-L6-v2's config and tokenizer files;
#   - minilm-q8.safetensors.xz: its weights with every matrix rounded to int8 (one f32 scale per
#     row; 21 MB — f16 weights would be 41 MB and do not fit). REAL_WEIGHTS=0 leaves them out;
#   - SciFact's corpus, queries and qrels (train for the speed runs' pairs, train-sub and dev
#     for the quality runs).
# It needs a Python with numpy and safetensors for the weights (PYTHON, default python3).
#
# On the GPU machine it finds the CUDA 13 libraries (system toolkit or PyTorch's wheels), builds
# a MiniLM-shaped model with random weights (all that parity and speed need), then:
#  1. parity: tests/cuda.rs against the CPU (embeddings, an MNRL step's loss and gradients, a
#     cross-encoder step, a LoRA step; f32, tolerance 1e-4), on the tiny test models and on the
#     MiniLM-shaped model;
#  2. ragtune encodes the 5,183 documents, batch 32, max_seq_length 256, f32 and bf16 (weights in
#     bf16), docs/s of a second run (the first warms up);
#  3. ragtune's MNRL training at batch 32 and 128, f32 and bf16 (autocast over f32 weights, as
#     bf16=True), lr 2e-5: median seconds per step after the first two, and the GPU's peak memory;
#  4. the same encode and train jobs with sentence-transformers in one Python process (f32 with
#     TF32 off; bf16 as above);
#  5. with the int8-rounded all-MiniLM-L6-v2: tuned on train-sub (1 epoch, batch 32, lr 2e-5,
#     warm-up 10 %) in f32 and in bf16, per seed (QUALITY_SEEDS, default "42 7"), dev NDCG@10 of
#     each — the bf16 goal: within 0.005 of f32.
# Each step runs only if the time budget (BUDGET seconds, default 460) has room for it; a
# skipped step says so in the figures. Everything lands in $OUT (default target/gpu-check/out);
# the last line printed is one JSON object of figures. GPU_CHECK_DEVICE=cpu SMOKE=1 runs the GPU
# half here, on the CPU with a small slice of the data (a test of this script's plumbing, not a
# figure; the CUDA binaries then need scripts/cuda-stubs.py's stand-ins on LD_LIBRARY_PATH).
set -uo pipefail
cd "$(dirname "$0")/.."
pack=target/gpu-check
shared=${SHARED:-../shared}
python=${PYTHON:-python3}

if [ "${1:-}" = "--prepare" ]; then
  set -e
  "$python" -c "import numpy, safetensors" 2>/dev/null \
    || { echo "gpu-check: --prepare needs numpy and safetensors in $python (set PYTHON)" >&2; exit 1; }
  bash scripts/build-cuda.sh
  snap=$(ls -d "${HF_HUB_CACHE:-$HOME/.cache/huggingface/hub}"/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/* | head -1)
  [ -n "$snap" ] || { echo "gpu-check: all-MiniLM-L6-v2 is not in the hub cache (scripts/seed-models.sh)" >&2; exit 1; }
  rm -rf "$pack/minilm" "$pack/scifact" "$pack"/*.safetensors* "$pack"/docs.txt* "$pack"/pairs.jsonl* "$pack/out"
  mkdir -p "$pack/minilm/1_Pooling" "$pack/scifact/qrels"
  for f in config.json config_sentence_transformers.json modules.json sentence_bert_config.json \
           special_tokens_map.json tokenizer.json tokenizer_config.json vocab.txt 1_Pooling/config.json; do
    cp "$snap/$f" "$pack/minilm/$f"
  done
  data=$shared/datasets/scifact
  cp "$data/corpus.jsonl" "$data/queries.jsonl" "$pack/scifact/"
  cp "$data/qrels/train.tsv" "$data/qrels/train-sub.tsv" "$data/qrels/dev.tsv" "$pack/scifact/qrels/"
  xz -T2 -9 -f "$pack/scifact/corpus.jsonl" "$pack/scifact/queries.jsonl"
  if [ "${REAL_WEIGHTS:-1}" = 1 ]; then
    "$python" scripts/gpu-st-reference.py quantize "$snap/model.safetensors" "$pack/minilm-q8.safetensors"
    xz -T2 -9 -f "$pack/minilm-q8.safetensors"
  fi
  size=$(du -sb "$pack" | cut -f1)
  echo "gpu-check: packed $(( size / 1048576 )) MiB in $pack:" >&2
  ls -la "$pack" >&2
  [ "$size" -lt $(( 62 * 1048576 )) ] || { echo "gpu-check: the pack is over 62 MiB; with the repo it will not travel" >&2; exit 1; }
  exit 0
fi

# ── On the GPU machine ───────────────────────────────────────────────────────────────────────
out=${OUT:-$pack/out}
device=${GPU_CHECK_DEVICE:-cuda}
export GPU_CHECK_DEVICE=$device PYTHONUNBUFFERED=1
smoke=${SMOKE:-0}
budget=${BUDGET:-460}
work=$(mktemp -d)
mkdir -p "$out"
began=$(date +%s)
elapsed() { echo $(( $(date +%s) - began )); }
left() { echo $(( budget - $(elapsed) )); }
limit() { local l; l=$(left); echo $(( l < 10 ? 10 : l )); }  # a command's timeout: what is left
say() { echo "[gpu-check $(elapsed) s] $*" >&2; }
figures="$out/figures.jsonl"
: > "$figures"
put() { echo "{\"$1\": $2}" >> "$figures"; }  # put KEY JSON_VALUE (objects under one key merge)
room() {  # room SECONDS STEP: is there time left for STEP? else record it as skipped
  if [ "$(left)" -lt "$1" ]; then
    say "skipping $2: $(left) s of the budget left, it needs about $1"
    put "skipped_$2" "\"$(left) s of the ${budget} s budget left\""
    return 1
  fi
}
finish() {
  python3 - "$figures" "$(elapsed)" <<'EOF'
import json, sys
merged = {}
for line in open(sys.argv[1]):
    for key, value in json.loads(line).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update(value)
        else:
            merged[key] = value
def num(x):
    return x if isinstance(x, (int, float)) else None
for key, value in merged.items():
    if key.startswith("quality_") and None not in (value.get("f32_ndcg@10"), value.get("bf16_ndcg@10")):
        value["bf16_minus_f32"] = value["bf16_ndcg@10"] - value["f32_ndcg@10"]
    if not isinstance(value, dict) or not isinstance(value.get("st"), dict):
        continue
    if key.startswith("encode_"):
        ours, theirs = num(value.get("ragtune_docs_per_s")), num(value["st"].get("docs_per_s"))
        value["speedup"] = ours / theirs if ours and theirs else None
    elif key.startswith("train_"):
        ours, theirs = num(value.get("ragtune_s_per_step")), num(value["st"].get("s_per_step"))
        value["speedup"] = theirs / ours if ours and theirs else None
merged["seconds"] = int(sys.argv[2])
print(json.dumps(merged))
EOF
}
trap finish EXIT

[ -f "$pack/bins.tar.xz" ] || { put error '"no target/gpu-check: run --prepare first and carry it"'; exit 1; }
xz -dc "$pack/bins.tar.xz" | tar -C "$work" -xf - || { put error '"bins.tar.xz does not unpack"'; exit 1; }
chmod +x "$work/ragtune" "$work/cuda-tests"
beir=$work/scifact
mkdir -p "$beir/qrels" && cp "$pack"/scifact/qrels/*.tsv "$beir/qrels/"
for f in corpus.jsonl queries.jsonl; do xz -dc "$pack/scifact/$f.xz" > "$beir/$f"; done
# The speed runs' inputs: every document as one line of text, and the train qrels as
# (query, positive) pairs. SMOKE keeps a slice of each, and of the corpus the dev queries need.
python3 - "$beir" "$work" "$smoke" <<'EOF'
import json, sys
from pathlib import Path
beir, work, smoke = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
corpus = [json.loads(line) for line in open(beir / "corpus.jsonl", encoding="utf-8")]
docs = {d["_id"]: " ".join(f"{d.get('title', '')} {d['text']}".split()) for d in corpus}
queries = {json.loads(l)["_id"]: json.loads(l)["text"] for l in open(beir / "queries.jsonl", encoding="utf-8")}
pairs = []
for line in list(open(beir / "qrels" / "train.tsv", encoding="utf-8"))[1:]:
    q, d, _ = line.rstrip("\n").split("\t")
    pairs.append({"anchor": queries[q], "positive": docs[d]})
if smoke:
    keep = {d["_id"] for d in corpus[:200]}
    for split in ("train-sub", "dev"):
        keep |= {l.split("\t")[1] for l in list(open(beir / "qrels" / f"{split}.tsv"))[1:]}
    corpus = [d for d in corpus if d["_id"] in keep]
    with open(beir / "corpus.jsonl", "w", encoding="utf-8") as out:
        out.writelines(json.dumps(d) + "\n" for d in corpus)
    pairs = pairs[:300]
texts = list(docs.values())[: 64 if smoke else None]
(work / "docs.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
with open(work / "pairs.jsonl", "w", encoding="utf-8") as out:
    out.writelines(json.dumps(p) + "\n" for p in pairs)
EOF
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$out/gpu.txt"
put gpu "$(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read().strip()))' "$out/gpu.txt")"

# The CUDA libraries the binaries link: the system's, else PyTorch's wheels.
dirs=""
for lib in libcuda.so.1 libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libnvrtc.so.13 libcurand.so.10; do
  hit=$(ldconfig -p 2>/dev/null | awk -v l="$lib" '$1 == l {print $NF; exit}')
  if [ -z "$hit" ]; then
    roots="/usr/local/nvidia /usr/local/cuda /usr/local/cuda-13* /usr/lib/x86_64-linux-gnu /usr/lib64 $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null)"
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
  timeout "$(( $(limit) < 200 ? $(limit) : 200 ))" "$work/cuda-tests" --test-threads 1 --nocapture > "$out/parity.txt" 2>&1
rc=$?
put parity "{\"passed\": $([ $rc = 0 ] && echo true || echo false), \"summary\": $(grep -E '^test result' "$out/parity.txt" | tail -1 | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))')}"
grep -E "agree|differ|panicked|SKIPPED" "$out/parity.txt" >&2

docs_per_s() { sed -n 's/.* \([0-9.]*\) docs\/s.*/\1/p' "$1" | tail -1 | grep . || echo null; }
if room 60 encode; then
  say "2. ragtune encodes $(wc -l < "$work/docs.txt") documents"
  for dtype in f32 bf16; do
    for run in warm timed; do
      timeout "$(limit)" "${rt[@]}" encode --model "$model" --input "$work/docs.txt" --output "$work/emb.npy" \
        --batch-size 32 --dtype "$dtype" 2> "$out/encode-$dtype-$run.log"
    done
    put "encode_$dtype" "{\"ragtune_docs_per_s\": $(docs_per_s "$out/encode-$dtype-timed.log")}"
  done
fi

# Peak GPU memory of a command, sampled by nvidia-smi every 100 ms (MiB, the whole GPU).
peak_mib() {
  local log=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$log" 2>/dev/null &
  local sampler=$!
  "$@"
  local rc=$?
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
  return $rc
}
median_step() { python3 - "$1" <<'EOF'
import json, statistics, sys
t = [json.loads(l)["seconds"] for l in open(sys.argv[1]) if '"loss"' in l]
print(statistics.median([b - a for a, b in zip(t, t[1:])][1:]))
EOF
}
jobs=(encode:f32:32 encode:bf16:32)
for batch in 32 128; do
  steps=$(( batch == 32 ? 24 : 12 ))
  [ "$smoke" = 1 ] && steps=4
  for dtype in f32 bf16; do
    jobs+=("train:$dtype:$batch:$steps")
    room 45 "train_b${batch}_$dtype" || continue
    say "3. ragtune MNRL, batch $batch, $dtype"
    run=$work/train-$batch-$dtype
    peak_mib "$out/mem-$batch-$dtype.txt" timeout "$(limit)" "${rt[@]}" train embed --model "$model" \
      --data "$work/pairs.jsonl" --loss mnrl --batch-size "$batch" --epochs 10 --max-steps "$steps" --lr 2e-5 \
      --save-steps 100000 --precision "$dtype" --output "$run" \
      > "$out/train-$batch-$dtype.json" 2> "$out/train-$batch-$dtype.log"
    peak=$(sort -n "$out/mem-$batch-$dtype.txt" 2>/dev/null | tail -1 | grep -E '^[0-9]+$' || echo null)
    put "train_b${batch}_$dtype" "{\"ragtune_s_per_step\": $(median_step "$run/train_log.jsonl" 2>/dev/null || echo null), \"ragtune_peak_gpu_mib\": $peak}"
  done
done

if room 90 sentence_transformers; then
  say "4. sentence-transformers: ${jobs[*]}"
  timeout "$(limit)" python3 scripts/gpu-st-reference.py suite "$model" "$work/docs.txt" "$work/pairs.jsonl" "${jobs[@]}" \
    2>> "$out/python.log" | grep --line-buffered '^{' >> "$figures"
fi

if [ -f "$pack/minilm-q8.safetensors.xz" ]; then
  real=$work/minilm-q8
  cp -r "$pack/minilm" "$real"
  xz -dc "$pack/minilm-q8.safetensors.xz" > "$work/q8.safetensors"
  python3 scripts/gpu-st-reference.py dequantize "$work/q8.safetensors" "$real/model.safetensors" 2>> "$out/python.log"
  for seed in ${QUALITY_SEEDS:-42 7}; do
    for dtype in f32 bf16; do
      room 60 "quality_${seed}_$dtype" || continue
      say "5. all-MiniLM-L6-v2 (int8-rounded) tuned on train-sub, $dtype, seed $seed"
      extra=()
      [ "$smoke" = 1 ] && extra=(--max-steps 2)
      timeout "$(limit)" "${rt[@]}" train embed --model "$real" --data "$beir" --beir-split train-sub --loss mnrl \
        --epochs 1 --batch-size 32 --lr 2e-5 --warmup-ratio 0.1 --seed "$seed" --precision "$dtype" "${extra[@]}" \
        --dev-beir "$beir" --dev-split dev --save-steps 100000 --output "$work/real-$seed-$dtype" \
        > "$out/real-$seed-$dtype.json" 2> "$out/real-$seed-$dtype.log"
      put "quality_seed$seed" "$(python3 - "$out/real-$seed-$dtype.json" "$dtype" <<'EOF'
import json, sys
try:
    outcome = json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][-1])
except (IndexError, ValueError, OSError):
    outcome = {}
dtype = sys.argv[2]
figures = {f"{dtype}_ndcg@10": (outcome.get("dev_after") or {}).get("ndcg@10"),
           f"{dtype}_s_per_step": outcome.get("seconds_per_step")}
if dtype == "f32":
    figures["before_ndcg@10"] = (outcome.get("dev_before") or {}).get("ndcg@10")
print(json.dumps(figures))
EOF
)"
    done
  done
fi
say "done"
