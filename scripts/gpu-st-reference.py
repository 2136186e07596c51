"""sentence-transformers on the GPU, the reference side of scripts/gpu-check.sh.

    python gpu-st-reference.py random-model MINILM_FILES_DIR OUT_DIR
        all-MiniLM-L6-v2's shape with random weights (seeded): its config, tokenizer and
        sentence-transformers files with a freshly initialised BertModel.
    python gpu-st-reference.py encode MODEL DOCS_TXT DTYPE BATCH
        encodes every line of DOCS_TXT (a warm-up pass first), prints {"docs_per_s": …}.
    python gpu-st-reference.py train MODEL PAIRS_JSONL DTYPE BATCH STEPS
        MultipleNegativesRankingLoss steps (AdamW, lr 2e-5; bf16 as the Trainer's bf16=True:
        autocast over f32 weights), each timed from tokenization to the optimizer step with the
        GPU synchronised; prints {"s_per_step": median over steps after the first two, …}.

f32 runs with TF32 off, as ragtune's f32 (candle's cuBLAS products are full f32).
GPU_CHECK_DEVICE=cpu runs it on the CPU (a smoke test of this script, not a figure).
"""

import json
import os
import statistics
import sys
import time

import torch

DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def random_model(files: str, out: str) -> None:
    import shutil
    from pathlib import Path

    from transformers import BertConfig, BertModel

    shutil.copytree(files, out, dirs_exist_ok=True)
    torch.manual_seed(0)
    model = BertModel(BertConfig.from_pretrained(out), add_pooling_layer=False)
    model.save_pretrained(out, safe_serialization=True)
    print(json.dumps({"random_model": out, "parameters": sum(p.numel() for p in model.parameters())}))
    assert (Path(out) / "model.safetensors").exists()


def load(model: str, dtype: str):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model, device=DEVICE)
    if dtype == "bf16":
        st = st.to(torch.bfloat16)
    return st


def encode(model: str, docs: str, dtype: str, batch: int) -> None:
    texts = open(docs, encoding="utf-8").read().splitlines()
    st = load(model, dtype)
    st.encode(texts[:256], batch_size=batch)  # warm-up: kernels, allocator
    sync()
    began = time.perf_counter()
    st.encode(texts, batch_size=batch)
    sync()
    took = time.perf_counter() - began
    print(json.dumps({"docs": len(texts), "seconds": took, "docs_per_s": len(texts) / took,
                      "max_seq_length": st.max_seq_length, "dtype": dtype, "batch": batch}))


def train(model: str, pairs: str, dtype: str, batch: int, steps: int) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    rows = [json.loads(line) for line in open(pairs, encoding="utf-8")]
    st = SentenceTransformer(model, device=DEVICE)
    loss = MultipleNegativesRankingLoss(st)
    optimizer = torch.optim.AdamW(st.parameters(), lr=2e-5, weight_decay=0.0)
    st.train()
    tokenize = getattr(st, "preprocess", st.tokenize)  # sentence-transformers 6 renamed it
    times = []
    for step in range(steps):
        chunk = [rows[(step * batch + i) % len(rows)] for i in range(batch)]
        sync()
        began = time.perf_counter()
        features = [tokenize([r[c] for r in chunk]) for c in ("anchor", "positive")]
        features = [{k: v.to(DEVICE) if torch.is_tensor(v) else v for k, v in f.items()} for f in features]
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            value = loss(features, None)
        value.backward()
        torch.nn.utils.clip_grad_norm_(st.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - began)
    print(json.dumps({"s_per_step": statistics.median(times[2:]), "steps": steps, "batch": batch,
                      "dtype": dtype, "max_seq_length": st.max_seq_length,
                      "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else None}))


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "random-model":
        random_model(*args)
    elif mode == "encode":
        encode(args[0], args[1], args[2], int(args[3]))
    elif mode == "train":
        train(args[0], args[1], args[2], int(args[3]), int(args[4]))
    else:
        sys.exit(__doc__)
