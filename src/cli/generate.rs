//! `ragtune generate`: answers from a language model, one prompt or a file of prompts decoded
//! together, with throughput figures for local models.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use ragtune::llm::{ChatRequest, GenerationParams, LocalLlm, Message};

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    llm: super::LlmArgs,
    /// The user message.
    #[arg(long, conflicts_with = "prompts")]
    prompt: Option<String>,
    /// A file with one user message per line, answered as one batch.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// A system message before each prompt.
    #[arg(long)]
    system: Option<String>,
    /// Continue the prompt text as is, without the chat template (local models only).
    #[arg(long)]
    raw: bool,
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// 0 decodes greedily.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop before this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Print prompt and generation throughput to stderr (local models).
    #[arg(long)]
    stats: bool,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let prompts: Vec<String> = match (&args.prompt, &args.prompts) {
        (Some(p), None) => vec![p.clone()],
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
        _ => bail!("give --prompt TEXT or --prompts FILE"),
    };
    if prompts.is_empty() {
        bail!("no prompts to answer");
    }
    let params = GenerationParams {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        stop: args.stop.clone(),
        ..Default::default()
    };
    params.validate()?;
    let answers: Vec<String> = if args.raw || args.stats {
        // Local only: raw continuation and throughput need the model itself.
        let Some(id) = args.llm.llm.strip_prefix("local:") else {
            bail!("--raw and --stats need a local: model");
        };
        let model = LocalLlm::load(id, &args.llm.client.local_options())?;
        let texts: Vec<String> = if args.raw {
            prompts.clone()
        } else {
            prompts
                .iter()
                .map(|p| model.render(&conversation(args.system.as_deref(), p)))
                .collect::<Result<_>>()?
        };
        let done = model.complete(&texts, &vec![params; texts.len()])?;
        let s = model.last_stats();
        eprintln!(
            "prompt: {} tokens in {:.2} s ({:.1} tokens/s); generation: {} tokens in {:.2} s ({:.1} tokens/s); batch {}",
            s.prompt_tokens,
            s.prefill_seconds,
            s.prefill_tokens_per_second(),
            s.generated_tokens,
            s.decode_seconds,
            s.decode_tokens_per_second(),
            args.llm.client.max_batch.min(texts.len()),
        );
        done.into_iter().map(|c| c.text).collect()
    } else {
        let model = args.llm.open()?;
        let requests: Vec<ChatRequest> = prompts
            .iter()
            .map(|p| ChatRequest::new(conversation(args.system.as_deref(), p), params.clone()))
            .collect();
        model
            .chat_batch(&requests)
            .into_iter()
            .map(|a| a.map(|c| c.text))
            .collect::<Result<_>>()?
    };
    for a in answers {
        println!("{a}");
    }
    Ok(())
}

fn conversation(system: Option<&str>, prompt: &str) -> Vec<Message> {
    system
        .map(Message::system)
        .into_iter()
        .chain([Message::user(prompt)])
        .collect()
}
