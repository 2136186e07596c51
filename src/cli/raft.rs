//! `ragtune raft build`: RAFT examples from a BEIR folder's questions (with SciFact-style
//! evidence, or answered by a teacher model), distractors from a retriever (optionally
//! reranked) or at random.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use ragtune::data::load_beir;
use ragtune::eval::{Candidates, RerankEvalOptions};
use ragtune::models::{CrossEncoder, CrossEncoderOptions, LoadOptions, SentenceEncoder};
use ragtune::raft::{self, Distractors, RaftFormat, RaftOptions, RemovedOracle};

#[derive(Subcommand)]
pub enum RaftCommand {
    /// Build RAFT examples (question, oracle + distractors, quoted chain-of-thought answer).
    Build(Box<BuildArgs>),
}

#[derive(Args)]
pub struct BuildArgs {
    /// BEIR folder: corpus, queries and qrels.
    #[arg(long)]
    beir: PathBuf,
    /// Which qrels name the questions' oracle documents (qrels/<split>.tsv).
    #[arg(long, default_value = "train")]
    split: String,
    /// SciFact-style evidence (JSONL of query-id, corpus-id, label, sentence indices into the
    /// corpus' `sentences`): answers composed from it, no model needed.
    #[arg(long)]
    evidence: Option<PathBuf>,
    /// Keep only questions judged in this qrels file (e.g. the dev claims).
    #[arg(long)]
    only_qrels: Option<PathBuf>,
    /// Leave out questions judged in this qrels file.
    #[arg(long)]
    exclude_qrels: Option<PathBuf>,
    /// retrieved, random or mix.
    #[arg(long, default_value = "retrieved")]
    distractors: String,
    /// Sentence encoder whose top-ranked non-positives are the distractors.
    #[arg(long, default_value = "sentence-transformers/all-MiniLM-L6-v2")]
    retriever: String,
    /// Cross-encoder that reorders the retriever's candidates first.
    #[arg(long)]
    reranker: Option<String>,
    /// Candidates retrieved per question.
    #[arg(long, default_value_t = 30)]
    candidates: usize,
    /// Embedding cache folder (reruns do not re-encode the corpus).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Distractors per example (default 3).
    #[arg(long)]
    k: Option<usize>,
    /// Retrieved candidates skipped before distractors are taken (default 0).
    #[arg(long)]
    skip: Option<usize>,
    /// Probability that an example keeps its oracle (default 0.8).
    #[arg(long)]
    oracle_p: Option<f64>,
    /// keep (the oracle's answer stays) or abstain, where the oracle is removed.
    #[arg(long)]
    removed_oracle: Option<String>,
    /// Sentences kept per document besides its first (those sharing most words with the question).
    #[arg(long)]
    max_sentences: Option<usize>,
    /// Share of questions held out as dev (written to --dev-output).
    #[arg(long)]
    dev_share: Option<f64>,
    /// Leave out training examples of the commoner labels (seeded) until each label has as many
    /// as the rarest.
    #[arg(long)]
    balance_labels: bool,
    #[arg(long)]
    seed: Option<u64>,
    /// A teacher model (`local:…` or `openai:…` with --base-url) answers instead of the
    /// evidence. Its answers are kept in --llm-cache (default: beside --output), so a killed
    /// run, rerun, repeats no request already answered.
    #[arg(long)]
    teacher: Option<String>,
    #[command(flatten)]
    client: super::LlmClientArgs,
    /// Attempts after the first for answers with invented quotes or no final answer.
    #[arg(long, default_value_t = 2)]
    retries: usize,
    /// New tokens per teacher answer at most.
    #[arg(long, default_value_t = raft::TEACHER_MAX_TOKENS)]
    teacher_max_tokens: usize,
    /// messages, prompt_completion or reference.
    #[arg(long, default_value = "messages")]
    format: String,
    /// Training rows (the train split).
    #[arg(long)]
    output: PathBuf,
    /// Dev rows, with --dev-share.
    #[arg(long)]
    dev_output: Option<PathBuf>,
    /// Every example with its documents, labels and evidence (what `eval grounded` reads).
    #[arg(long)]
    examples_output: Option<PathBuf>,
}

pub fn run(cmd: RaftCommand) -> Result<()> {
    match cmd {
        RaftCommand::Build(a) => build(*a),
    }
}

fn parse<T: serde::de::DeserializeOwned>(flag: &str, value: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(value.replace('-', "_")))
        .with_context(|| format!("{flag} `{value}`"))
}

fn qrels_queries(path: &PathBuf) -> Result<std::collections::HashSet<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
        .filter(|q| !q.is_empty())
        .map(str::to_string)
        .collect())
}

fn build(a: BuildArgs) -> Result<()> {
    let d = RaftOptions::default();
    let options = RaftOptions {
        k: a.k.unwrap_or(d.k),
        distractors: parse::<Distractors>("--distractors", &a.distractors)?,
        skip: a.skip.unwrap_or(d.skip),
        oracle_p: a.oracle_p.unwrap_or(d.oracle_p),
        removed_oracle: match &a.removed_oracle {
            Some(v) => parse::<RemovedOracle>("--removed-oracle", v)?,
            None => d.removed_oracle,
        },
        max_sentences: a.max_sentences,
        dev_share: a.dev_share.unwrap_or(d.dev_share),
        balance_labels: a.balance_labels,
        seed: a.seed.unwrap_or(d.seed),
        ..d
    };
    let format = parse::<RaftFormat>("--format", &a.format)?;
    let dataset = load_beir(&a.beir, &a.split)?;
    let only = a.only_qrels.as_ref().map(qrels_queries).transpose()?;
    let exclude = a.exclude_qrels.as_ref().map(qrels_queries).transpose()?;
    let keep = |q: &str| {
        only.as_ref().is_none_or(|o| o.contains(q))
            && exclude.as_ref().is_none_or(|e| !e.contains(q))
    };
    let corpus_jsonl = a.beir.join("corpus.jsonl");
    let sources = raft::sources_from_dataset(
        &dataset,
        a.evidence.as_deref().map(|e| (e, corpus_jsonl.as_path())),
        &keep,
    )
    .context("(check --split, --only-qrels, --exclude-qrels)")?;
    let corpus: Vec<(String, String)> = dataset
        .doc_ids()?
        .into_iter()
        .zip(dataset.doc_texts()?)
        .collect();
    let ranking = if options.distractors == Distractors::Random {
        None
    } else {
        let retriever = SentenceEncoder::load(&a.retriever, &LoadOptions::default())?;
        let eval_options = RerankEvalOptions {
            top_k: a.candidates,
            cache_dir: a.cache_dir.clone(),
            ..Default::default()
        };
        eprintln!(
            "retrieving {} candidates per question with {}",
            a.candidates, a.retriever
        );
        let candidates = Candidates::retrieve(&retriever, &dataset, &eval_options)?;
        let reranker = a
            .reranker
            .as_ref()
            .map(|r| {
                CrossEncoder::load(r, &LoadOptions::default(), &CrossEncoderOptions::default())
            })
            .transpose()?;
        Some(candidates.ranking(reranker.as_ref(), &eval_options)?)
    };
    let mut set = raft::build(&sources, &corpus, ranking.as_ref(), &options)?;
    match &a.teacher {
        Some(spec) => {
            let mut client = a.client.clone();
            client
                .llm_cache
                .get_or_insert_with(|| super::synth::sibling(&a.output, "llm-cache"));
            let teacher = client.open(spec)?;
            let params = ragtune::llm::GenerationParams {
                max_tokens: a.teacher_max_tokens,
                ..raft::teacher_params()
            };
            let began = std::time::Instant::now();
            set.teacher_answers(teacher.as_ref(), &params, a.retries)?;
            let secs = began.elapsed().as_secs_f64();
            eprintln!(
                "teacher answered {} examples in {secs:.1} s ({:.2} examples/s)",
                set.examples.len(),
                set.examples.len() as f64 / secs.max(1e-9)
            );
        }
        None if a.evidence.is_some() => set.gold_answers()?,
        None => bail!("answers need --evidence (gold) or --teacher MODEL"),
    }
    let train = set.write_jsonl(&a.output, "train", format)?;
    let dev = match &a.dev_output {
        Some(p) => set.write_jsonl(p, "dev", format)?,
        None => 0,
    };
    if let Some(p) = &a.examples_output {
        let text: String = set
            .examples
            .iter()
            .map(|e| Ok(serde_json::to_string(e)? + "\n"))
            .collect::<Result<_>>()?;
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    let s = &set.summary;
    eprintln!(
        "{} examples ({} with the oracle, {} without), {train} train rows -> {}, {dev} dev rows; \
         {} regenerated, {} dropped, {} with quotes outside their context, {} short of retrieved distractors; \
         evidence sentences kept by the cut: {}/{}",
        s.examples,
        s.with_oracle,
        s.without_oracle,
        a.output.display(),
        s.regenerated,
        s.dropped,
        s.quotes_outside_context,
        s.random_filled,
        s.evidence_kept,
        s.evidence_sentences
    );
    println!("{}", serde_json::to_string(&set.summary)?);
    Ok(())
}
