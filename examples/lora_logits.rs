//! Prints a local model's next-token logits for a chat prompt, with or without a LoRA adapter,
//! as JSON `{ids, logits}` — the Rust side of scripts/check-lora-parity.py.
//!
//! cargo run --example lora_logits -- MODEL [--adapter DIR] [--random-adapter SEED] [PROMPT]
//!
//! `--random-adapter SEED` puts seeded adapters on all seven linear layers with a random B
//! (`init_lora_weights: false`; a fresh B is zero) and saves them to `lora-random-SEED/` in PEFT's format, so that PEFT can load
//! the same adapter.

use anyhow::{Context, Result};
use ragtune::llm::{LocalLlm, LocalOptions, Message};
use ragtune::models::lora::LoraConfig;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .context("usage: lora_logits MODEL [--adapter DIR] [--random-adapter SEED] [PROMPT]")?;
    let (mut adapter, mut random, mut prompt) =
        (None, None, "What is the capital of France?".to_string());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--adapter" => adapter = args.next(),
            "--random-adapter" => {
                random = Some(
                    args.next()
                        .context("--random-adapter SEED")?
                        .parse::<u64>()?,
                )
            }
            _ => prompt = a,
        }
    }
    let mut llm = LocalLlm::load(
        model.strip_prefix("local:").unwrap_or(&model),
        &LocalOptions {
            q8_decode: false,
            ..Default::default()
        },
    )?;
    if let Some(dir) = &adapter {
        llm.load_adapter(std::path::Path::new(dir), false)?;
    }
    if let Some(seed) = random {
        let config = LoraConfig {
            target_modules: vec!["all-linear".into()],
            lora_dropout: 0.0,
            seed,
            init_lora_weights: false,
            ..Default::default()
        };
        llm.model_mut().add_lora(&config)?;
        let dir = format!("lora-random-{seed}");
        ragtune::models::peft::save_adapter(
            llm.model(),
            &config,
            &model,
            std::path::Path::new(&dir),
        )?;
        eprintln!("adapter saved to {dir}/");
    }
    let text = llm.render(&[Message::user(prompt)])?;
    let ids = llm.encode(&text)?;
    let logits = llm.next_token_logits(&ids)?;
    println!("{}", serde_json::json!({"ids": ids, "logits": logits}));
    Ok(())
}
