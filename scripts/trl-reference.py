"""PEFT + TRL side of scripts/bench-generate.sh (a development check, not a project dependency).

  python scripts/trl-reference.py data SNAPSHOT GGUF SCIFACT_DIR N PROMPT_TOKENS OUT.jsonl
      N prompt/completion rows: a SciFact abstract cut to PROMPT_TOKENS tokens (the base's own
      tokenizer), then a claim and its verdict as the completion.
  python scripts/trl-reference.py train SNAPSHOT GGUF DATA.jsonl ADAPTER_DIR STEPS BATCH LR MAX_LEN OUT.json
      SFTTrainer on a PEFT model whose adapter is ADAPTER_DIR (written by ragtune, loaded
      trainable), rows in file order (no shuffling), constant learning rate, no warm-up, no
      dropout, f32 (bf16=False) and no gradient checkpointing (TRL turns both on by default), 2
      threads. Writes each step's loss and seconds, and peak RSS.

Needs torch, transformers, peft, trl, datasets and gguf.
"""
import json
import resource
import sys
import time

import torch

torch.set_num_threads(2)


def make_data(snapshot, gguf, scifact, n, prompt_tokens, out):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(snapshot, gguf_file=gguf)
    docs = [json.loads(l) for l in open(f"{scifact}/corpus.jsonl")]
    claims = [json.loads(l) for l in open(f"{scifact}/queries.jsonl")]
    with open(out, "w") as f:
        for i in range(n):
            text = " ".join(d["title"] + ". " + d["text"] for d in docs[i * 3:i * 3 + 3])
            ids = tok(text, add_special_tokens=False)["input_ids"][:prompt_tokens]
            prompt = "Document: " + tok.decode(ids) + "\nClaim: " + claims[i]["text"] + "\nVerdict:"
            completion = " SUPPORT" if i % 2 == 0 else " CONTRADICT"
            f.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")


def train(snapshot, gguf, data, adapter, steps, batch, lr, max_len, out):
    from datasets import load_dataset
    from peft import PeftModel
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(snapshot, gguf_file=gguf)
    base = AutoModelForCausalLM.from_pretrained(snapshot, gguf_file=gguf, dtype=torch.float32)
    # transformers dequantizes a GGUF file to f32 but still marks the model quantized, and Trainer
    # refuses to train a GGUF-quantized model: the weights are plain f32 tensors, so unmark it.
    base.hf_quantizer = None
    base.is_quantized = False
    if hasattr(base.config, "quantization_config"):
        del base.config.quantization_config
    model = PeftModel.from_pretrained(base, adapter, is_trainable=True)
    for m in model.modules():
        if hasattr(m, "lora_dropout"):
            for k in m.lora_dropout:
                m.lora_dropout[k] = torch.nn.Identity()
    dataset = load_dataset("json", data_files=data, split="train")

    class InOrder(SFTTrainer):
        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    log = {"losses": [], "seconds": []}

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            log["seconds"].append(time.perf_counter() - self.t)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                log["losses"].append(logs["loss"])

    config = SFTConfig(
        output_dir=out + ".trl", max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        max_length=max_len, bf16=False, fp16=False, gradient_checkpointing=False, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0, seed=42,
        packing=False, completion_only_loss=True,
    )
    trainer = InOrder(model=model, args=config, train_dataset=dataset, processing_class=tok,
                      callbacks=[Timer()])
    trainer.train()
    tokens = sum(len(r) for r in trainer.train_dataset["input_ids"][: steps * batch])
    log["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    log["tokens_per_step"] = tokens / max(1, min(steps, len(dataset) // batch))
    json.dump(log, open(out, "w"))


if __name__ == "__main__":
    mode, *a = sys.argv[1:]
    if mode == "data":
        make_data(a[0], a[1], a[2], int(a[3]), int(a[4]), a[5])
    else:
        train(a[0], a[1], a[2], a[3], int(a[4]), int(a[5]), float(a[6]), int(a[7]), a[8])
