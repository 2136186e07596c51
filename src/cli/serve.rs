//! `ragtune serve`: a local model as an OpenAI-compatible server on loopback.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use ragtune::llm::serve::{Faults, ServeOptions, Server};
use ragtune::llm::{LocalLlm, LocalOptions};

#[derive(Args)]
pub struct ServeArgs {
    /// A GGUF file, owner/repo/file.gguf, or a Hugging Face Llama folder or repo.
    #[arg(long, default_value = super::DEFAULT_LLM)]
    model: String,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Requests decoded together.
    #[arg(long, default_value_t = ragtune::llm::DEFAULT_MAX_BATCH)]
    max_batch: usize,
    /// Decode with f32 weights instead of 8-bit copies (slower, bit-exact).
    #[arg(long)]
    f32_decode: bool,
    /// Testing clients: answer this share of requests with 429 or 500.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Testing clients: hold this share of requests unanswered for --stall-seconds.
    #[arg(long, default_value_t = 0.0)]
    stall_rate: f64,
    #[arg(long, default_value_t = 30.0)]
    stall_seconds: f64,
    /// Append a line per answered request to this file.
    #[arg(long)]
    request_log: Option<PathBuf>,
    /// A PEFT LoRA adapter folder to load onto the model, merged into its weights.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Serve a pipeline's query engine instead (from `ragtune pipeline`): each request's last
    /// user message is retrieved, reranked and answered; the response's `rag` field holds
    /// `quotes` ({text, verified, doc_ids, chunk_ids}), `final_answer` and `documents`.
    #[arg(long, conflicts_with_all = ["adapter"])]
    pipeline: Option<PathBuf>,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let (id, model): (String, std::sync::Arc<dyn ragtune::llm::ChatModel>) = match &args.pipeline {
        Some(dir) => {
            let rag = ragtune::pipeline::rag::Rag::open(dir, None, true, true)?;
            let name = format!("rag:{}", dir.display());
            (
                name.clone(),
                std::sync::Arc::new(ragtune::pipeline::rag::RagChat { rag, name }),
            )
        }
        None => {
            let id = args.model.strip_prefix("local:").unwrap_or(&args.model);
            let model = LocalLlm::load(
                id,
                &LocalOptions {
                    max_batch: args.max_batch,
                    q8_decode: !args.f32_decode,
                    adapter: args.adapter.clone(),
                    ..Default::default()
                },
            )?;
            (id.to_string(), std::sync::Arc::new(model))
        }
    };
    let server = Server::start(
        model,
        &ServeOptions {
            host: args.host,
            port: args.port,
            max_batch: args.max_batch,
            faults: Faults {
                fail_rate: args.fail_rate,
                stall_rate: args.stall_rate,
                stall_seconds: args.stall_seconds,
                seed: 0,
            },
            request_log: args.request_log,
            ..Default::default()
        },
    )?;
    // Scripts wait for this line to know the server is up.
    eprintln!("serving {id} at {}", server.base_url());
    server.wait();
    Ok(())
}

#[derive(Args)]
pub struct MergeArgs {
    /// Base model: a GGUF file, `owner/repo/file.gguf` in the hub cache, or a Hugging Face folder
    /// (the `local:` prefix is optional).
    #[arg(long)]
    model: String,
    /// The PEFT LoRA adapter folder (e.g. from `train generate`).
    #[arg(long)]
    adapter: PathBuf,
    /// Where the merged model goes (config.json, model.safetensors, tokenizer files).
    #[arg(long)]
    output: PathBuf,
}

/// `ragtune merge`: base + adapter → one Hugging Face safetensors folder.
pub fn merge(args: MergeArgs) -> Result<()> {
    let id = args.model.strip_prefix("local:").unwrap_or(&args.model);
    let model = LocalLlm::load(
        id,
        &LocalOptions {
            q8_decode: false,
            adapter: Some(args.adapter.clone()),
            ..Default::default()
        },
    )?;
    model.save_merged(&args.output)?;
    eprintln!(
        "merged {} into {} (a LlamaForCausalLM folder: AutoModelForCausalLM.from_pretrained or --llm local:{})",
        args.adapter.display(),
        args.output.display(),
        args.output.display()
    );
    Ok(())
}
