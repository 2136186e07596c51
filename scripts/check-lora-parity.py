"""LoRA adapter parity with PEFT (a development check, not a project dependency).

Usage: python scripts/check-lora-parity.py SNAPSHOT_DIR GGUF_FILE ADAPTER_DIR RAGTUNE.json [BASE.json [FIXTURE.json]]

SNAPSHOT_DIR/GGUF_FILE is the base (transformers loads the GGUF and un-permutes q/k); ADAPTER_DIR
a PEFT folder written by ragtune (`train generate`, or `cargo run --example lora_logits --
MODEL --random-adapter SEED`); RAGTUNE.json is `cargo run --example lora_logits -- MODEL --adapter
ADAPTER_DIR` ({ids, logits}); BASE.json the same without the adapter. Loads the adapter with
`PeftModel.from_pretrained` (missing or unexpected keys are an error here, where PEFT only warns),
and prints the largest difference between PEFT's and ragtune's next-token logits on the same ids,
and how far the adapter moves them from the base. With FIXTURE.json, writes the ids and every
16th logit of PEFT's output with and without the adapter (tests/fixtures/lora-peft-parity.json is
made this way from `--random-adapter 3` on SmolLM2-135M-Instruct Q4_1). Needs torch,
transformers, peft and gguf.
"""
import json
import sys
import warnings

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

torch.set_num_threads(2)
snapshot, gguf, adapter, ours_file = sys.argv[1:5]
ours = json.load(open(ours_file))
ids = torch.tensor([ours["ids"]])
base = AutoModelForCausalLM.from_pretrained(snapshot, gguf_file=gguf, dtype=torch.float32)
with torch.no_grad():
    base_logits = base(ids).logits[0, -1]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model = PeftModel.from_pretrained(base, adapter)
bad = [str(w.message) for w in caught if "missing" in str(w.message).lower() or "unexpected" in str(w.message).lower()]
if bad:
    sys.exit("PEFT warned about keys: " + " | ".join(bad))
model.eval()
with torch.no_grad():
    logits = model(ids).logits[0, -1]
mine = torch.tensor(ours["logits"])
print(json.dumps({
    "tokens": ids.shape[1],
    "max_abs_diff_peft_vs_ragtune": (logits - mine).abs().max().item(),
    "max_abs_diff_adapter_vs_base": (logits - base_logits).abs().max().item(),
    "argmax_peft": int(logits.argmax()),
    "argmax_ragtune": int(mine.argmax()),
}))
if len(sys.argv) > 5:
    theirs_base = torch.tensor(json.load(open(sys.argv[5]))["logits"])
    print("max |ragtune base - transformers base|:", (theirs_base - base_logits).abs().max().item())
if len(sys.argv) > 6:
    json.dump({
        "ids": ours["ids"],
        "stride": 16,
        "peft_logits": [round(float(x), 6) for x in logits[::16]],
        "base_logits": [round(float(x), 6) for x in base_logits[::16]],
        "argmax": int(logits.argmax()),
    }, open(sys.argv[6], "w"))
