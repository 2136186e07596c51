#!/usr/bin/env bash
# Local decoding speed of SmolLM2-135M-Instruct (Q4_1 GGUF from the seeded hub cache): prompt
# processing and generation tokens/s, ragtune at batch 1 and batch 8, side by side with
# llama.cpp (llama-cpp-python) on the same file and thread count; then a batch of RAG-length
# prompts with ragtune's CPU attention kernels and with candle's composed ops.
#
#   LLAMA_PYTHON=/path/to/venv/bin/python bash scripts/bench-llm.sh   (venv with llama-cpp-python)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
THREADS=${THREADS:-2}
GEN=${GEN:-64}
BIN=target/release/ragtune
[ -x "$BIN" ] || cargo build --release --quiet
GGUF=$(ls ~/.cache/huggingface/hub/models--QuantFactory--SmolLM2-135M-Instruct-GGUF/snapshots/*/SmolLM2-135M-Instruct.Q4_1.gguf | head -1)
PASSAGE="Honey bee colonies are headed by a single queen, the only fully developed female, who mates early in life during one or a few mating flights and stores the sperm in her spermatheca for the rest of her life of two to five years. Workers are sterile females that do all the labour of the colony; their tasks change with age, from cleaning cells and nursing brood to building comb, processing nectar, guarding the entrance and finally foraging outside. Drones are the males, raised in spring and summer, whose only task is to mate with a queen from another colony."
PROMPT="Write 3 different search queries that a person could type into a search engine to find the passage below. One query per line.\n\nPassage:\n$PASSAGE"
tmp=$(mktemp -d)
printf '%b\n' "$PROMPT" | tr '\n' ' ' > "$tmp/one.txt"; echo >> "$tmp/one.txt"
for i in $(seq 1 8); do cat "$tmp/one.txt"; done > "$tmp/eight.txt"

echo "== ragtune (CANDLE_NUM_THREADS=$THREADS), $GEN new tokens, greedy"
for batch in 1 8; do
  file=$tmp/one.txt; [ "$batch" = 8 ] && file=$tmp/eight.txt
  CANDLE_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS "$BIN" generate --prompts "$file" --max-batch "$batch" \
    --max-tokens "$GEN" --stats 2>&1 >/dev/null | sed "s/^/batch $batch: /"
done

# A RAG answer's shape: 16 prompts of five apiary passages and a question (about 360 tokens),
# 128 new tokens, decoded as one batch; ragtune's CPU attention kernels against candle's composed
# ops (RAGTUNE_KERNELS=portable), which must write the same text.
python3 - "$tmp/rag16.txt" <<'PY'
import json, sys
docs = [json.loads(l)["text"] for l in open("recipes/data/apiary/corpus.jsonl")]
queries = [json.loads(l)["text"] for l in open("recipes/data/apiary/queries.jsonl")]
with open(sys.argv[1], "w") as out:
    for i in range(16):
        context = " ".join(f"Document {n + 1}: {t}" for n, t in enumerate(docs[5 * i:5 * i + 5]))
        prompt = (f"{context} Question: {queries[i]} Answer the question from the documents above, "
                  "quoting the sentences you rely on between ##begin_quote## and ##end_quote##; "
                  "then give the final answer after ##Answer:.")
        print(prompt.replace("\n", " "), file=out)
PY
echo "== ragtune, batch 16 over RAG-length prompts, 128 new tokens"
for kernels in native portable; do
  RAGTUNE_KERNELS=$kernels CANDLE_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS "$BIN" generate \
    --prompts "$tmp/rag16.txt" --max-batch 16 --max-tokens 128 --stats 2>&1 >"$tmp/$kernels.out" \
    | sed "s/^/$kernels: /"
done
cmp -s "$tmp/native.out" "$tmp/portable.out" && echo "same text both ways" || echo "THE TEXTS DIFFER"

if [ -n "${LLAMA_PYTHON:-}" ]; then
  echo "== llama.cpp (llama-cpp-python, n_threads=$THREADS), batch 1"
  "$LLAMA_PYTHON" - "$GGUF" "$tmp/one.txt" "$THREADS" "$GEN" <<'PY'
import sys, time
from llama_cpp import Llama
path, prompt_file, threads, gen = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
user = open(prompt_file).read().strip()
llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=1024, n_batch=512, verbose=False)
text = f"<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
best_p = best_g = 0.0
for _ in range(3):
    llm.reset()
    t0 = time.perf_counter(); llm.eval(tokens); t1 = time.perf_counter()
    n = 0
    for _ in range(gen):
        tok = llm.sample(temp=0.0)
        if tok == llm.token_eos():
            break
        llm.eval([tok]); n += 1
    t2 = time.perf_counter()
    best_p = max(best_p, len(tokens) / (t1 - t0)); best_g = max(best_g, n / (t2 - t1))
print(f"prompt: {len(tokens)} tokens ({best_p:.1f} tokens/s); generation: {n} tokens ({best_g:.1f} tokens/s); best of 3")
PY
fi
rm -rf "$tmp"
