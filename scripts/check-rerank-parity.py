"""Cross-encoder parity with sentence-transformers (a development check, not a project dependency).

Usage: python scripts/check-rerank-parity.py MODEL_DIR PAIRS.jsonl RAGTUNE_SCORES.jsonl [FIXTURE.json]

MODEL_DIR is a cross-encoder folder (e.g. written by `ragtune rerank --save-model` or
`ragtune train rerank`); RAGTUNE_SCORES.jsonl is `ragtune rerank --activation identity` on
PAIRS.jsonl ({query, document} rows). Prints the largest difference between ragtune's logits and
`CrossEncoder.predict(..., activation_fn=Identity())`, and between sentence-transformers and
transformers' AutoModelForSequenceClassification on the same folder. With FIXTURE.json, writes the
pairs, the Python tokenizer's ids and segment ids, the logits and the default-activation scores
(tests/fixtures/cross-encoder-parity.json is made this way on all-MiniLM-L6-v2 with a fresh head).
Needs torch, sentence-transformers and transformers.
"""
import json
import sys

import torch
from sentence_transformers import CrossEncoder
from transformers import AutoModelForSequenceClassification, AutoTokenizer

torch.set_num_threads(2)
folder, pairs_file, scores_file = sys.argv[1:4]
rows = [json.loads(line) for line in open(pairs_file)]
pairs = [(r["query"], r["document"]) for r in rows]
ours = [json.loads(line)["score"] for line in open(scores_file)]
model = CrossEncoder(folder)
logits = model.predict(pairs, activation_fn=torch.nn.Identity(), batch_size=4)
print(f"activation {model.activation_fn}, max_length {model.max_seq_length}, {len(pairs)} pairs")
print("max |ragtune - sentence-transformers| (logits):", max(abs(a - b) for a, b in zip(logits, ours)))
hf = AutoModelForSequenceClassification.from_pretrained(folder)
tok = AutoTokenizer.from_pretrained(folder)
enc = tok([p[0] for p in pairs], [p[1] for p in pairs], padding=True, truncation=True,
          max_length=model.max_seq_length, return_tensors="pt")
with torch.no_grad():
    out = hf(**enc).logits[:, 0]
print("max |transformers - sentence-transformers| (logits):", (out - torch.tensor(logits)).abs().max().item())
if len(sys.argv) > 4:
    encoded = [tok(q, d, truncation=True, max_length=model.max_seq_length) for q, d in pairs]
    json.dump({
        "pairs": pairs,
        "input_ids": [e["input_ids"] for e in encoded],
        "token_type_ids": [e["token_type_ids"] for e in encoded],
        "logits": [float(x) for x in logits],
        "sigmoid": [float(x) for x in model.predict(pairs, batch_size=4)],
    }, open(sys.argv[4], "w"))
    print("wrote", sys.argv[4])
