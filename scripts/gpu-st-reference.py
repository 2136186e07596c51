"""The Python side of scripts/gpu-check.sh: sentence-transformers on the GPU, and the model files.

    python gpu-st-reference.py random-model MINILM_FILES_DIR OUT_DIR
        all-MiniLM-L6-v2's shape with random weights (seeded): its config, tokenizer and
        sentence-transformers files with a freshly initialised BertModel.
    python gpu-st-reference.py quantize MODEL_SAFETENSORS OUT_SAFETENSORS      (numpy only)
        every matrix to int8 with one f32 scale per row (absmax / 127), vectors to f16: all-MiniLM-L6-v2
        in 23 MB, small enough to travel beside the binaries.
    python gpu-st-reference.py dequantize IN_SAFETENSORS OUT_SAFETENSORS       (numpy only)
        back to f32 weights (the int8-rounded model both libraries then start from).
    python gpu-st-reference.py suite MODEL DOCS_TXT PAIRS_JSONL JOB...
        runs each JOB in one process and prints one JSON line per job, keyed as gpu-check.sh's
        figures:
          encode:DTYPE:BATCH        every line of DOCS_TXT, after a warm-up pass: {"docs_per_s": …}
          train:DTYPE:BATCH:STEPS   MultipleNegativesRankingLoss steps (AdamW, lr 2e-5; bf16 as
                                    the Trainer's bf16=True: autocast over f32 weights), each timed
                                    from tokenization to the optimizer step with the GPU
                                    synchronised: {"s_per_step": median after the first two, …}

f32 runs with TF32 off, as ragtune's f32 (candle's cuBLAS products are full f32).
GPU_CHECK_DEVICE=cpu runs it on the CPU (a smoke test of this script, not a figure).
"""

import json
import os
import statistics
import sys
import time

DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")


def quantize(src: str, dst: str) -> None:
    import numpy as np
    from safetensors.numpy import load_file, save_file

    out = {}
    for name, w in load_file(src).items():
        w = w.astype(np.float32)
        if w.ndim == 2:
            scale = np.maximum(np.abs(w).max(axis=1, keepdims=True), 1e-12) / 127.0
            out[name + ".q8"] = np.round(w / scale).astype(np.int8)
            out[name + ".scale"] = scale.astype(np.float32)
        else:
            out[name] = w.astype(np.float16)
    save_file(out, dst)


def dequantize(src: str, dst: str) -> None:
    import numpy as np
    from safetensors.numpy import load_file, save_file

    packed = load_file(src)
    out = {}
    for name, w in packed.items():
        if name.endswith(".q8"):
            base = name[: -len(".q8")]
            out[base] = w.astype(np.float32) * packed[base + ".scale"]
        elif not name.endswith(".scale"):
            out[name] = w.astype(np.float32)
    save_file(out, dst)


def random_model(files: str, out: str) -> None:
    import shutil
    from pathlib import Path

    import torch
    from transformers import BertConfig, BertModel

    shutil.copytree(files, out, dirs_exist_ok=True)
    torch.manual_seed(0)
    model = BertModel(BertConfig.from_pretrained(out), add_pooling_layer=False)
    model.save_pretrained(out, safe_serialization=True)
    print(json.dumps({"random_model": out, "parameters": sum(p.numel() for p in model.parameters())}))
    assert (Path(out) / "model.safetensors").exists()


class Suite:
    def __init__(self, model: str, docs: str, pairs: str):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self.torch = torch
        self.model = model
        self.texts = open(docs, encoding="utf-8").read().splitlines()
        self.rows = [json.loads(line) for line in open(pairs, encoding="utf-8")]

    def sync(self) -> None:
        if DEVICE == "cuda":
            self.torch.cuda.synchronize()

    def fresh(self):
        from sentence_transformers import SentenceTransformer

        if DEVICE == "cuda":
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()
        return SentenceTransformer(self.model, device=DEVICE)

    def peak_gib(self):
        return self.torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else None

    def encode(self, dtype: str, batch: int) -> dict:
        st = self.fresh()
        if dtype == "bf16":
            st = st.to(self.torch.bfloat16)
        st.encode(self.texts[:256], batch_size=batch)  # warm-up: kernels, allocator
        self.sync()
        began = time.perf_counter()
        st.encode(self.texts, batch_size=batch)
        self.sync()
        took = time.perf_counter() - began
        return {"docs": len(self.texts), "seconds": took, "docs_per_s": len(self.texts) / took,
                "max_seq_length": st.max_seq_length, "peak_gib": self.peak_gib()}

    def train(self, dtype: str, batch: int, steps: int) -> dict:
        try:  # sentence-transformers 6 moved the losses; 5 has them here only
            from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
        except ImportError:
            from sentence_transformers.losses import MultipleNegativesRankingLoss

        torch = self.torch
        st = self.fresh()
        loss = MultipleNegativesRankingLoss(st)
        optimizer = torch.optim.AdamW(st.parameters(), lr=2e-5, weight_decay=0.0)
        st.train()
        tokenize = getattr(st, "preprocess", st.tokenize)  # sentence-transformers 6 renamed it
        times = []
        for step in range(steps):
            chunk = [self.rows[(step * batch + i) % len(self.rows)] for i in range(batch)]
            self.sync()
            began = time.perf_counter()
            features = [tokenize([r[c] for r in chunk]) for c in ("anchor", "positive")]
            features = [{k: v.to(DEVICE) if torch.is_tensor(v) else v for k, v in f.items()} for f in features]
            with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=dtype == "bf16"):
                value = loss(features, None)
            value.backward()
            torch.nn.utils.clip_grad_norm_(st.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            self.sync()
            times.append(time.perf_counter() - began)
        return {"s_per_step": statistics.median(times[2:]), "steps": steps,
                "max_seq_length": st.max_seq_length, "peak_gib": self.peak_gib()}

    def run(self, job: str) -> None:
        kind, dtype, *numbers = job.split(":")
        numbers = [int(n) for n in numbers]
        try:
            if kind == "encode":
                key, result = f"encode_{dtype}", self.encode(dtype, *numbers)
            else:
                key, result = f"train_b{numbers[0]}_{dtype}", self.train(dtype, *numbers)
        except Exception as error:  # one job's failure must not lose the others' figures
            key = f"encode_{dtype}" if kind == "encode" else f"train_b{numbers[0]}_{dtype}"
            result = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps({key: {"st": result}}), flush=True)


if __name__ == "__main__":
    mode, *args = sys.argv[1:] or [""]
    if mode == "random-model":
        random_model(*args)
    elif mode == "quantize":
        quantize(*args)
    elif mode == "dequantize":
        dequantize(*args)
    elif mode == "suite":
        suite = Suite(*args[:3])
        for job in args[3:]:
            suite.run(job)
    else:
        sys.exit(__doc__)
