"""sentence-transformers' side of the reranker benchmarks (scripts/bench-rerank.sh): the same
training and the same scoring as ragtune, in PyTorch on the CPU with 2 threads. A development
tool, run with a Python that has torch, sentence-transformers and datasets; never a dependency.

  train --init DIR --data pairs.jsonl --out DIR [--epochs 1 --batch-size 16 --lr 2e-5
        --warmup-ratio 0.1 --max-length 256 --seed 42 --max-steps N]
      CrossEncoderTrainer from the cross-encoder folder DIR (ragtune writes it with a fresh head:
      `ragtune rerank --save-model`) on (query, document, label) rows; prints one JSON line with
      steps, seconds per step, the last logged losses and the peak RSS. The model is saved in --out.
  score --model DIR --pairs pairs.jsonl [--batch-size 32 --max-length 256]
      CrossEncoder.predict over {query, document} rows; prints pairs/s and peak RSS as JSON.
  candidates --retriever DIR --beir DIR --split dev --queries 20 --top-k 100 --out pairs.jsonl
      The first N judged queries of the split with their top-k documents by the retriever
      (SentenceTransformer, cosine), as {query, document} rows: the same pairs for both tools.
"""
import argparse
import json
import resource
import time

import torch

torch.set_num_threads(2)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def cmd_train(a):
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (CrossEncoder, CrossEncoderTrainer,
                                                     CrossEncoderTrainingArguments, losses)
    from transformers import TrainerCallback

    rows = read_jsonl(a.data)
    keys = list(rows[0].keys())
    text_keys = [k for k in keys if k not in ("label", "score")]
    data = Dataset.from_dict({
        "query": [r[text_keys[0]] for r in rows],
        "document": [r[text_keys[1]] for r in rows],
        "label": [float(r["label"]) for r in rows],
    })
    model = CrossEncoder(a.init, max_length=a.max_length)
    loss = losses.BinaryCrossEntropyLoss(model)
    logged = []

    class Losses(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                logged.append((state.global_step, logs["loss"]))

    args = CrossEncoderTrainingArguments(
        output_dir=a.out + "-trainer", num_train_epochs=a.epochs, per_device_train_batch_size=a.batch_size,
        learning_rate=a.lr, warmup_ratio=a.warmup_ratio, seed=a.seed, save_strategy="no", logging_steps=a.logging_steps,
        max_steps=a.max_steps if a.max_steps else -1,
        report_to="none", bf16=False, fp16=False, dataloader_drop_last=False, use_cpu=True,
    )
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=loss, callbacks=[Losses()])
    start = time.time()
    result = trainer.train()
    seconds = time.time() - start
    model.save(a.out)
    steps = result.global_step
    print(json.dumps({"steps": steps, "seconds": seconds, "seconds_per_step": seconds / max(steps, 1),
                      "train_loss": result.training_loss, "logged": logged if a.logging_steps == 1 else logged[-5:], "peak_rss_mb": peak_rss_mb()}))


def cmd_score(a):
    from sentence_transformers.cross_encoder import CrossEncoder
    rows = read_jsonl(a.pairs)
    pairs = [(r["query"], r["document"]) for r in rows]
    model = CrossEncoder(a.model, max_length=a.max_length)
    start = time.time()
    model.predict(pairs, batch_size=a.batch_size, show_progress_bar=False)
    seconds = time.time() - start
    print(json.dumps({"pairs": len(pairs), "seconds": seconds, "pairs_per_second": len(pairs) / seconds,
                      "peak_rss_mb": peak_rss_mb()}))


def cmd_candidates(a):
    from sentence_transformers import SentenceTransformer
    corpus = read_jsonl(f"{a.beir}/corpus.jsonl")
    texts = [(d.get("title", "") + " " + d["text"]).strip() for d in corpus]
    queries = {q["_id"]: q["text"] for q in read_jsonl(f"{a.beir}/queries.jsonl")}
    judged = []
    with open(f"{a.beir}/qrels/{a.split}.tsv") as f:
        for line in f.readlines()[1:]:
            qid = line.split("\t")[0]
            if qid not in judged:
                judged.append(qid)
    judged = judged[: a.queries]
    model = SentenceTransformer(a.retriever)
    q = model.encode([queries[i] for i in judged], normalize_embeddings=True, convert_to_tensor=True)
    d = model.encode(texts, normalize_embeddings=True, convert_to_tensor=True, batch_size=32)
    top = (q @ d.T).topk(a.top_k, dim=1).indices.tolist()
    with open(a.out, "w") as f:
        for qid, docs in zip(judged, top):
            for i in docs:
                f.write(json.dumps({"query": queries[qid], "document": texts[i]}) + "\n")
    print(json.dumps({"queries": len(judged), "pairs": len(judged) * a.top_k}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--init", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--epochs", type=float, default=1)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-5)
    t.add_argument("--warmup-ratio", type=float, default=0.1)
    t.add_argument("--max-length", type=int, default=256)
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (speed runs)")
    t.add_argument("--logging-steps", type=int, default=10, help="1 prints every step's loss")
    s = sub.add_parser("score")
    s.add_argument("--model", required=True)
    s.add_argument("--pairs", required=True)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--max-length", type=int, default=256)
    c = sub.add_parser("candidates")
    c.add_argument("--retriever", required=True)
    c.add_argument("--beir", required=True)
    c.add_argument("--split", default="dev")
    c.add_argument("--queries", type=int, default=20)
    c.add_argument("--top-k", type=int, default=100)
    c.add_argument("--out", required=True)
    a = ap.parse_args()
    {"train": cmd_train, "score": cmd_score, "candidates": cmd_candidates}[a.cmd](a)


if __name__ == "__main__":
    main()
