//! The reranker stage: fine-tuning a cross-encoder on (query, document) relevance. [`RerankJob`]
//! is the stage's one entry point (the CLI, the script bindings and the pipeline call it): it
//! gathers the dev and held-out candidates, and [`RerankTrainer`] hands the shared loop a
//! [`RerankTask`]: the cross-encoder's weights, a batch's loss (pairs chosen by the loss, scored
//! in one pass or with gradient caching), reranking metrics on dev candidates, and saving in
//! sentence-transformers' cross-encoder layout.

pub mod data;
pub mod losses;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Tensor, Var};

use super::card::{CardFacts, ModelKind};
use super::config::TrainConfig;
use super::optim::{Grads, Params};
use super::sampler::SampleRows;
use super::task::{micro_batch_rng, BatchDropout, StepOutput, TrainTask};
use super::trainer::{fit, TrainOutcome};
use crate::data::RetrievalDataset;
use crate::eval::metrics::MetricValues;
use crate::eval::rerank::{evaluate_reranker, Candidates, RerankEvalOptions};
use crate::fingerprint::Fingerprint;
use crate::models::fusion::FusionChoice;
use crate::models::{CrossEncoder, SentenceEncoder};
pub use data::{RerankBatch, RerankFormat, RerankSet};
pub use losses::{RerankLoss, RerankLossConfig};

/// Fine-tunes `model` in place on `data` and writes the result to an output folder.
pub struct RerankTrainer<'a> {
    pub model: &'a CrossEncoder,
    pub data: &'a RerankSet,
    pub loss: RerankLossConfig,
    /// Shared settings; [`TrainConfig::rerank`] gives this stage's defaults.
    pub config: TrainConfig,
    /// Dev candidates reranked before, every `eval_steps`, and after training.
    pub dev: Option<&'a Candidates>,
    /// How dev candidates are scored (cut-offs, batch size).
    pub dev_options: RerankEvalOptions,
    /// Held-out candidates (queries kept out of `data`, e.g. from [`hold_out_for_fusion`]): after
    /// training the model reranks them, and the retriever weight that fuses best
    /// (`models::fusion`) is saved beside it as `fusion.json`, which rerankings then use.
    pub fusion: Option<&'a Candidates>,
}

/// This stage's training defaults for `loss`: [`TrainConfig::rerank`], at the loss's own learning
/// rate where it has one ([`RerankLossConfig::learning_rate`]). The CLI, scripts and the pipeline
/// start from this.
pub fn default_config(loss: &RerankLossConfig) -> TrainConfig {
    let mut config = TrainConfig::rerank();
    if let Some(lr) = loss.learning_rate() {
        config.lr = lr;
    }
    config
}

/// [`hold_out_for_fusion`]'s split: the rows to train on and the queries that choose the weight.
pub struct FusionHoldOut {
    /// `data` without the rows that ask a held-out query.
    pub training: RerankSet,
    /// The held-out queries' retrieved candidates.
    pub held_out: Candidates,
    /// How many rows were left out, and how many judged queries the split had.
    pub rows_left_out: usize,
    pub queries: usize,
}

/// Splits off the queries that choose the fusion weight: `retriever`'s top `options.top_k` for
/// one in `every` of `dataset`'s judged queries (by a hash of the query id;
/// [`crate::models::fusion::held_out`]), and `data` without the rows that ask any of them.
pub fn hold_out_for_fusion(
    data: &RerankSet,
    retriever: &SentenceEncoder,
    dataset: &RetrievalDataset,
    options: &RerankEvalOptions,
    every: usize,
) -> Result<FusionHoldOut> {
    let candidates = Candidates::retrieve(retriever, dataset, options)?;
    let held_out = candidates.held_out(every);
    if held_out.query_ids.is_empty() {
        bail!(
            "{}: no query is held out for choosing the fusion weight (1 in {every} of {}); \
             use a larger split or a smaller --fusion-every",
            candidates.name,
            candidates.query_ids.len()
        );
    }
    let texts: std::collections::HashSet<&str> =
        held_out.queries.iter().map(String::as_str).collect();
    let (training, rows_left_out) = data.without_queries(&texts);
    if training.is_empty() {
        bail!(
            "holding out {} queries for the fusion weight leaves no training rows",
            texts.len()
        );
    }
    Ok(FusionHoldOut {
        training,
        held_out,
        rows_left_out,
        queries: candidates.query_ids.len(),
    })
}

/// The candidates a reranker run judges beside training, and how many: the one place where
/// `train rerank`'s and `train_reranker`'s defaults live.
#[derive(Clone, Debug)]
pub struct RerankSides {
    /// Candidates per dev query during training (a final top-100 is `eval rerank`'s job).
    pub dev_top_k: usize,
    /// Hold out the fusion split's queries whose id's SHA-256 is divisible by this
    /// ([`crate::models::fusion::held_out`]; 10 holds out about one in ten).
    pub fusion_every: usize,
    /// Retrieved candidates per held-out query.
    pub fusion_top_k: usize,
    /// Where the retriever keeps its embeddings for the dev and held-out retrieval.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RerankSides {
    fn default() -> Self {
        Self {
            dev_top_k: 20,
            fusion_every: 10,
            fusion_top_k: 100,
            cache_dir: None,
        }
    }
}

/// Fewest held-out queries on which a run chooses a fusion weight it was not asked for.
pub const MIN_DEFAULT_HELD_OUT: usize = 10;

/// Retriever of the dev and held-out candidates when a run names none.
pub const DEFAULT_RETRIEVER: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// The reranker stage's entry point, which the CLI, the script bindings and the pipeline call:
/// retrieves dev candidates, holds out the fusion queries and leaves their rows out, trains, and
/// chooses the fusion weight ([`RerankTrainer`] does the last two).
pub struct RerankJob<'a> {
    pub model: &'a CrossEncoder,
    pub data: RerankSet,
    pub loss: RerankLossConfig,
    pub config: TrainConfig,
    /// Retrieves the dev and held-out candidates; unset, [`DEFAULT_RETRIEVER`] is loaded when
    /// either is asked for.
    pub retriever: Option<&'a SentenceEncoder>,
    /// Queries reranked before, during and after training.
    pub dev: Option<&'a RetrievalDataset>,
    /// The split the data was mined from: its held-out queries choose the fusion weight.
    pub fusion: Option<&'a RetrievalDataset>,
    /// `fusion` came from the data's record rather than from the user: with fewer than
    /// [`MIN_DEFAULT_HELD_OUT`] queries held out, the run then trains on every row instead.
    pub fusion_by_default: bool,
    pub sides: RerankSides,
}

impl RerankJob<'_> {
    /// Trains into `output` (see [`fit`]).
    pub fn run(self, output: &Path, resume: bool) -> Result<TrainOutcome> {
        let sides = &self.sides;
        let default_retriever;
        let retriever = match (self.retriever, self.dev.is_some() || self.fusion.is_some()) {
            (Some(r), _) => Some(r),
            (None, true) => {
                default_retriever = SentenceEncoder::load(DEFAULT_RETRIEVER, &Default::default())?;
                Some(&default_retriever)
            }
            (None, false) => None,
        };
        let dev_options = RerankEvalOptions {
            top_k: sides.dev_top_k,
            progress: false,
            cache_dir: sides.cache_dir.clone(),
            ..Default::default()
        };
        let mut data = self.data;
        let dev = match (self.dev, retriever) {
            (Some(dataset), Some(r)) => {
                eprintln!(
                    "retrieving dev candidates (top {}) with {}",
                    sides.dev_top_k,
                    r.name()
                );
                Some(Candidates::retrieve(r, dataset, &dev_options)?)
            }
            _ => None,
        };
        let held_out = match (self.fusion, retriever) {
            (Some(dataset), Some(r)) => 'fusion: {
                let judged = dataset.qrels_map()?;
                let held = judged
                    .keys()
                    .filter(|id| crate::models::fusion::held_out(id, sides.fusion_every))
                    .count();
                if self.fusion_by_default && held < MIN_DEFAULT_HELD_OUT {
                    eprintln!(
                        "only {held} of the split's {} queries would be held out (1 in {}), too \
                         few to choose a fusion weight: training on every row",
                        judged.len(),
                        sides.fusion_every
                    );
                    break 'fusion None;
                }
                eprintln!(
                    "retrieving candidates (top {}) for the fusion weight's held-out queries with {}",
                    sides.fusion_top_k,
                    r.name()
                );
                let options = RerankEvalOptions {
                    top_k: sides.fusion_top_k,
                    ..dev_options.clone()
                };
                let split = hold_out_for_fusion(&data, r, dataset, &options, sides.fusion_every)?;
                eprintln!(
                    "{} of {} queries held out to choose the fusion weight; training rows left \
                     out as they ask one: {}",
                    split.held_out.query_ids.len(),
                    split.queries,
                    split.rows_left_out
                );
                data = split.training;
                Some(split.held_out)
            }
            _ => None,
        };
        eprintln!(
            "training {} on {} rows, {} pairs ({}: columns {}) with {} at lr {:e} -> {}",
            self.model.name(),
            data.len(),
            data.pair_count(),
            serde_json::to_value(data.format)?.as_str().unwrap_or(""),
            data.columns.join(", "),
            self.loss.build()?.name(),
            self.config.lr,
            output.display()
        );
        RerankTrainer {
            model: self.model,
            data: &data,
            loss: self.loss,
            config: self.config,
            dev: dev.as_ref(),
            dev_options,
            fusion: held_out.as_ref(),
        }
        .run(output, resume)
    }
}

impl RerankTrainer<'_> {
    /// Trains into `output` (see [`fit`]).
    pub fn run(&self, output: &Path, resume: bool) -> Result<TrainOutcome> {
        if self.model.num_labels != 1 {
            bail!(
                "{} has {} labels; training rerankers with more than one label is not supported yet \
                 (load it with num_labels 1 for a fresh one-label head)",
                self.model.name(),
                self.model.num_labels
            );
        }
        let mut outcome = fit(&self.task()?, &self.config, output, resume)?;
        if let Some(held_out) = self.fusion {
            outcome.fusion = Some(self.choose_fusion(held_out, output)?);
        }
        Ok(outcome)
    }

    /// Reranks `held_out` with the trained model (the weights just saved in `output`), and saves
    /// the fusion weight that does best there ([`crate::models::fusion::best`]).
    fn choose_fusion(&self, held_out: &Candidates, output: &Path) -> Result<FusionChoice> {
        let options = RerankEvalOptions {
            progress: self.config.progress,
            ..self.dev_options.clone()
        };
        let reranked = held_out.rerank(self.model, &options)?;
        let choice = FusionChoice::from_curve(
            held_out.fusion_curve(&reranked),
            held_out.query_ids.len(),
            held_out.name.clone(),
        );
        choice.save(output)?;
        eprintln!(
            "fusion on {} held-out queries ({}): NDCG@10 retriever {:.4}, reranker alone {:.4}, \
             fused {:.4} at retriever weight {} (the best once each weight is averaged with its \
             neighbours) -> {}",
            choice.queries,
            choice.chosen_on,
            choice.retriever_ndcg10,
            choice.reranker_ndcg10,
            choice.fused_ndcg10,
            choice.retriever_weight,
            output.join(FusionChoice::FILE).display()
        );
        Ok(choice)
    }

    /// What the loop trains: this trainer's model, data and loss.
    pub fn task(&self) -> Result<RerankTask<'_>> {
        Ok(RerankTask {
            trainer: self,
            loss: self.loss.build()?,
        })
    }
}

/// The reranker stage as the training loop sees it.
pub struct RerankTask<'a> {
    trainer: &'a RerankTrainer<'a>,
    loss: Box<dyn RerankLoss>,
}

impl RerankTask<'_> {
    /// The loss of a batch and the gradients of `params`: the pairs the loss asks for are scored
    /// in one differentiable pass, or — with a mini-batch size — first without a graph, then the
    /// loss's gradient with respect to each logit is pushed back through one mini-batch at a time
    /// (the same gradients, one mini-batch's activations alive at once).
    pub fn loss_and_grads(
        &self,
        params: &Params,
        rows: &[usize],
        step: usize,
    ) -> Result<(f64, Grads)> {
        let model = self.trainer.model;
        let batch = self.trainer.data.batch(rows);
        // Losses that sample (in-batch negatives) and dropout draw from (seed, step, first row).
        let mut rng = micro_batch_rng(self.trainer.config.seed, step, rows);
        let pairs = self.loss.pairs(&batch, &mut rng);
        let dropout = BatchDropout {
            rates: self.trainer.config.dropout_rates(&model.bert.config)?,
            seed: rng.next_u64(),
        };
        let texts: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(r, d)| (batch.queries[*r].as_str(), d.as_str()))
            .collect();
        let encodings = model.tokenize_pairs(&texts)?;
        let refs: Vec<&tokenizers::Encoding> = encodings.iter().collect();
        let Some(size) = self.loss.mini_batch_size().filter(|&m| m < refs.len()) else {
            let logits = model.logits(&refs, dropout.mode(0, 0))?.squeeze(1)?;
            let value = self.loss.compute(&logits, &batch, &pairs)?;
            let grads = crate::models::precision::scale_loss(&value)?
                .backward()
                .context("back-propagating the loss")?;
            return Ok((scalar(&value)?, Grads::from_store(params, &grads)));
        };
        let size = size.max(1);
        let chunks: Vec<&[&tokenizers::Encoding]> = refs.chunks(size).collect();
        // Without a graph first; with dropout, through the training pass with the masks the
        // second pass draws again (the first row of each chunk places them).
        let detached: Vec<Tensor> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mode = dropout.graph_free_mode(0, i * size);
                Ok(model.logits(c, mode)?.squeeze(1)?.detach())
            })
            .collect::<Result<_>>()?;
        let leaf = Var::from_tensor(&Tensor::cat(&detached, 0)?)?;
        let value = self.loss.compute(leaf.as_tensor(), &batch, &pairs)?;
        let store = crate::models::precision::scale_loss(&value)?
            .backward()
            .context("back-propagating the loss onto the logits")?;
        let upstream = match store.get(leaf.as_tensor()) {
            Some(g) => g.detach(),
            None => leaf.as_tensor().zeros_like()?,
        };
        let mut total = Grads(vec![None; params.len()]);
        let mut at = 0;
        for chunk in chunks {
            let logits = model.logits(chunk, dropout.mode(0, at))?.squeeze(1)?;
            let surrogate = (logits * upstream.narrow(0, at, chunk.len())?)?.sum_all()?;
            total.accumulate(Grads::from_store(params, &surrogate.backward()?))?;
            at += chunk.len();
        }
        Ok((scalar(&value)?, total))
    }
}

impl TrainTask for RerankTask<'_> {
    fn loss_name(&self) -> String {
        self.loss.name()
    }

    fn check(&self) -> Result<()> {
        if self.trainer.data.is_empty() {
            bail!("the reranker training data has no rows");
        }
        self.loss.check(self.trainer.data)
    }

    fn rows(&self) -> &dyn SampleRows {
        self.trainer.data
    }

    fn params(&self) -> Params {
        Params::from_varmap(&self.trainer.model.varmap, |_| false)
    }

    fn step(&self, params: &Params, rows: &[usize], step: usize) -> Result<StepOutput> {
        let (loss, grads) = self.loss_and_grads(params, rows, step)?;
        Ok(StepOutput {
            loss,
            grads,
            weight: 1.0,
            tokens: 0,
        })
    }

    fn evaluate(&self) -> Result<Option<MetricValues>> {
        let Some(dev) = self.trainer.dev else {
            return Ok(None);
        };
        let options = RerankEvalOptions {
            progress: false,
            // The reranker alone (a base model's saved weight says nothing of the model trained).
            fusion: Some(self.trainer.dev_options.fusion.unwrap_or(0.0)),
            ..self.trainer.dev_options.clone()
        };
        Ok(Some(
            evaluate_reranker(self.trainer.model, dev, &options)?.reranked_metrics,
        ))
    }

    fn save_model(&self, dir: &Path) -> Result<()> {
        self.trainer.model.save(dir)
    }

    fn save_weights(&self, path: &Path) -> Result<()> {
        self.trainer.model.save_weights(path)
    }

    fn load_weights(&self, path: &Path) -> Result<()> {
        Ok(self.trainer.model.varmap.clone().load(path)?)
    }

    fn fingerprint(&self, h: &mut Fingerprint) -> Result<()> {
        let t = self.trainer;
        h.text(&serde_json::to_string(&t.loss)?)
            .text(t.model.name())
            .text(&t.model.max_length.to_string());
        for ((q, docs), labels) in t
            .data
            .queries
            .iter()
            .zip(&t.data.documents)
            .zip(&t.data.labels)
        {
            h.text(q);
            for d in docs {
                h.text(d);
            }
            for l in labels {
                h.write(&l.to_le_bytes());
            }
        }
        for v in t.data.teacher.iter().flatten().flatten() {
            h.write(&v.to_le_bytes());
        }
        Ok(())
    }

    fn card<'a>(&'a self, outcome: &'a TrainOutcome) -> CardFacts<'a> {
        let t = self.trainer;
        let d = t.data;
        let sample = (0..d.len().min(3)).map(|r| card_row(d, r)).collect();
        CardFacts {
            kind: ModelKind {
                library: "sentence-transformers",
                pipeline_tag: "text-ranking",
                load_hint: "A cross-encoder reranker: `CrossEncoder(\"<this folder>\")` in sentence-transformers, \
                            or `AutoModelForSequenceClassification` in transformers.",
            },
            base_model: t.model.name().to_string(),
            rows: d.len(),
            columns: d.columns.clone(),
            sample,
            loss: self.loss.name(),
            loss_settings: self.loss.settings(),
            loss_notes: vec![format!(
                "{} (query, document) pairs in {} rows; pairs truncated to {} tokens.",
                d.pair_count(),
                d.len(),
                t.model.max_length
            )],
            dev: t.dev.map(|c| format!("{} (top {} of {})", c.name, t.dev_options.top_k, c.retriever)),
            defaults: default_config(&t.loss),
            outcome,
            device: crate::models::device::name(t.model.device()),
        }
    }
}

/// Row `r` of the data as the card's table shows it: the cells of its columns.
fn card_row(d: &RerankSet, r: usize) -> Vec<String> {
    let mut row = vec![d.queries[r].clone()];
    match d.format {
        RerankFormat::LabeledPair => {
            row.push(d.documents[r][0].clone());
            row.push(d.labels[r][0].to_string());
        }
        RerankFormat::NTuple => {
            row.extend(d.documents[r].iter().cloned());
            if let Some(t) = &d.teacher {
                row.push(format!("{:?}", t[r]));
            }
        }
        RerankFormat::LabeledList => {
            row.push(format!("{:?}", d.documents[r]));
            row.push(format!("{:?}", d.labels[r]));
        }
    }
    row
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?)
}
