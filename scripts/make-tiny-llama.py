"""Builds tests/fixtures/tiny-llama: a random 2-layer Llama (grouped-query attention, untied
output) with a byte-level BPE tokenizer trained on a few sentences and a ChatML template, plus
the logits transformers computes for fixed inputs, so tests/llm.rs can check ragtune's decoder
against the reference implementation. Run with a Python that has torch, transformers, tokenizers:

    python scripts/make-tiny-llama.py tests/fixtures/tiny-llama
"""
import json, sys, pathlib
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import LlamaConfig, LlamaForCausalLM

out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
corpus = [
    "The queen lays eggs in the brood comb.",
    "Workers forage for nectar and pollen.",
    "Drones mate with queens on mating flights.",
    "What is the capital of France? Paris is the capital.",
] * 20
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
tok.train_from_iterator(corpus, trainer)
tok.save(str(out / "tokenizer.json"))
template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
json.dump({"chat_template": template, "eos_token": "<|im_end|>", "bos_token": None},
          open(out / "tokenizer_config.json", "w"), indent=1)

torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
                  tie_word_embeddings=False, eos_token_id=2, bos_token_id=None)
model = LlamaForCausalLM(cfg).eval()
with torch.no_grad():
    for p in model.parameters():
        p.normal_(0, 0.3)
model.save_pretrained(out, safe_serialization=True)

text = "The queen lays eggs"
ids = tok.encode(text).ids
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0, -1].tolist()
    greedy = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                            eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
json.dump({"text": text, "ids": ids, "last_logits": logits, "greedy": greedy},
          open(out / "expected.json", "w"))
print("vocab", tok.get_vocab_size(), "ids", ids, "greedy", greedy)
