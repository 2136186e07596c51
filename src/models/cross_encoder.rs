//! A cross-encoder (reranker) on candle: BERT reads `[CLS] query [SEP] document [SEP]` with
//! segment ids, the pooler (`tanh(dense(h[CLS]))`) and a linear classifier turn the first token
//! into `num_labels` logits — Hugging Face's `BertForSequenceClassification`, which
//! sentence-transformers' `CrossEncoder` wraps.
//!
//! Loads a sequence-classification folder (its head and `num_labels`), or any BERT or
//! sentence-transformers folder with a fresh head, as `CrossEncoder(model, num_labels=1)` does
//! (weights drawn from a seeded normal(0, 0.02), bias 0, as Hugging Face initialises them). The
//! activation applied to scores is the one sentence-transformers saved:
//! `config_sentence_transformers.json` (v6), `config.json["sentence_transformers"]` (v4–5), or
//! `sbert_ce_default_activation_function` (older); else sigmoid for one label, identity for more.
//!
//! Weights live in a [`VarMap`] under the checkpoint names (`bert.embeddings.…`,
//! `bert.pooler.dense.weight`, `classifier.weight`), so the same model is what the reranker
//! trainer fine-tunes and what [`CrossEncoder::save`] writes back.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenizers::{EncodeInput, Encoding, Tokenizer};

use super::bert::{linear, BertConfig, BertModel, Mode};
use super::encoder::{pass_token_cap, plan_passes, preview, read_json, unpad_and_truncate};
use super::hub::ModelSource;
use super::weights::{bert_prefix, ensure_all_loaded, preload_safetensors_as};
use super::LoadOptions;
use crate::progress::Progress;
use crate::rng::Rng;

/// What is applied to a logit to give the score `predict` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreActivation {
    Sigmoid,
    #[serde(alias = "none")]
    Identity,
    Tanh,
}

impl ScoreActivation {
    /// The dotted PyTorch class name sentence-transformers stores.
    pub fn torch_name(self) -> &'static str {
        match self {
            Self::Sigmoid => "torch.nn.modules.activation.Sigmoid",
            Self::Identity => "torch.nn.modules.linear.Identity",
            Self::Tanh => "torch.nn.modules.activation.Tanh",
        }
    }

    fn from_torch_name(name: &str) -> Result<Self> {
        Ok(match name.rsplit('.').next().unwrap_or_default() {
            "Sigmoid" => Self::Sigmoid,
            "Identity" => Self::Identity,
            "Tanh" => Self::Tanh,
            _ => bail!("activation function `{name}` is not supported (Sigmoid, Identity or Tanh)"),
        })
    }

    pub fn apply(self, x: f32) -> f32 {
        match self {
            Self::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Self::Identity => x,
            Self::Tanh => x.tanh(),
        }
    }
}

impl std::str::FromStr for ScoreActivation {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_lowercase()))
            .map_err(|_| anyhow::anyhow!("`{s}`: choose sigmoid, identity (none) or tanh"))
    }
}

/// How to load a cross-encoder. Scripts pass a map with these keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CrossEncoderOptions {
    /// Truncate pairs to this many tokens (default: the tokenizer's `model_max_length`, at most
    /// the model's positions; 512 for BERT-base-shaped models, as sentence-transformers).
    pub max_length: Option<usize>,
    /// Labels of a fresh head (a folder that already has a classifier keeps its own).
    pub num_labels: usize,
    /// Seed of a fresh head's weights.
    pub seed: u64,
}

impl Default for CrossEncoderOptions {
    fn default() -> Self {
        Self {
            max_length: None,
            num_labels: 1,
            seed: 42,
        }
    }
}

/// How to score pairs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PredictOptions {
    /// Pairs per forward pass (sorted by length first).
    pub batch_size: usize,
    /// Overrides the model's activation (`identity` gives raw logits).
    pub activation: Option<ScoreActivation>,
    pub progress: bool,
}

impl Default for PredictOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            activation: None,
            progress: true,
        }
    }
}

/// A BERT cross-encoder with a sequence-classification head.
pub struct CrossEncoder {
    name: String,
    pub bert: BertModel,
    pooler: (Tensor, Tensor),
    classifier: (Tensor, Tensor),
    /// The trainable weights, named as in a `BertForSequenceClassification` checkpoint.
    pub varmap: VarMap,
    tokenizer: Tokenizer,
    pub max_length: usize,
    pub num_labels: usize,
    pub activation: ScoreActivation,
    pad_id: u32,
    /// `config.json` as read, made a sequence-classification config; written back on save.
    pub config_json: serde_json::Value,
    /// Where the tokenizer's companion files come from when saving.
    pub tokenizer_dir: Option<PathBuf>,
    /// The retriever weight chosen for this reranker on held-out queries (its folder's
    /// `fusion.json`, written by `train rerank`): reranking retrieved candidates fuses with it
    /// unless told otherwise. Not saved with the weights: a further fine-tune chooses again.
    pub fusion: Option<super::fusion::FusionChoice>,
}

impl CrossEncoder {
    /// The retriever weight to fuse with: `given`, else the one saved with this reranker, else
    /// none (the reranker's order alone).
    pub fn fusion_weight(&self, given: Option<f64>) -> Option<f64> {
        given.or(self.fusion.as_ref().map(|f| f.retriever_weight))
    }

    /// Loads a cross-encoder from a local directory or hub id (see [`ModelSource::parse`]).
    pub fn load(spec: &str, load: &LoadOptions, options: &CrossEncoderOptions) -> Result<Self> {
        let source = ModelSource::parse(spec)?;
        Self::load_from(&source, load, options)
            .with_context(|| format!("loading cross-encoder `{spec}`"))
    }

    pub fn load_from(
        source: &ModelSource,
        load: &LoadOptions,
        options: &CrossEncoderOptions,
    ) -> Result<Self> {
        crate::runtime::flush_denormals();
        let config_path = source.file("config.json")?;
        let mut config_json: serde_json::Value = read_json(&config_path)?;
        let model_type = config_json["model_type"].as_str().unwrap_or("bert");
        if model_type != "bert" {
            bail!(
                "{}: model_type `{model_type}` is not supported; ragtune's cross-encoders are BERT \
                 models (bert-base, MiniLM, …)",
                config_path.display()
            );
        }
        let config: BertConfig = serde_json::from_value(config_json.clone())
            .with_context(|| format!("parsing {}", config_path.display()))?;
        config
            .validate()
            .with_context(|| config_path.display().to_string())?;
        let has_head = config_json["architectures"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "BertForSequenceClassification"));

        let weights_path = source.file("model.safetensors").context(
            "only safetensors weights are read; convert pytorch_model.bin with the Python `safetensors` package",
        )?;
        let root = bert_prefix(&weights_path)?;
        // Everything of the encoder goes under `bert.`; a head, if any, keeps its own name.
        let rename = |name: &str| -> String {
            match name.strip_prefix(root.as_str()) {
                Some(rest)
                    if rest.starts_with("embeddings.")
                        || rest.starts_with("encoder.")
                        || rest.starts_with("pooler.") =>
                {
                    format!("bert.{rest}")
                }
                _ => name.to_string(),
            }
        };
        let varmap = VarMap::new();
        let mut loaded =
            preload_safetensors_as(&varmap, &weights_path, load.dtype, &load.device, &rename)?;
        let num_labels = if has_head {
            config_json["num_labels"]
                .as_u64()
                .or_else(|| config_json["id2label"].as_object().map(|m| m.len() as u64))
                .unwrap_or(2) as usize
        } else {
            options.num_labels.max(1)
        };
        let h = config.hidden_size;
        // A fresh head (and a pooler the checkpoint lacks) is drawn from a seeded normal(0, 0.02).
        let mut rng = Rng::new(options.seed);
        let head: [(&str, Vec<usize>, f64); 4] = [
            ("bert.pooler.dense.weight", vec![h, h], 0.02),
            ("bert.pooler.dense.bias", vec![h], 0.0),
            ("classifier.weight", vec![num_labels, h], 0.02),
            ("classifier.bias", vec![num_labels], 0.0),
        ];
        for (name, shape, std) in head {
            let keep = loaded.contains(name) && (has_head || name.starts_with("bert."));
            if keep {
                continue;
            }
            let n: usize = shape.iter().product();
            let values: Vec<f64> = (0..n).map(|_| normal(&mut rng) * std).collect();
            let t = Tensor::from_vec(values, shape, &load.device)?.to_dtype(load.dtype)?;
            varmap
                .data()
                .lock()
                .expect("varmap lock poisoned")
                .insert(name.to_string(), candle_core::Var::from_tensor(&t)?);
            loaded.insert(name.to_string());
        }

        let vb = VarBuilder::from_varmap(&varmap, load.dtype, &load.device);
        let bert = BertModel::new(vb.pp("bert"), &config).with_context(|| {
            format!("{}: weights do not fit config.json", weights_path.display())
        })?;
        let get = |name: &str, shape: &[usize]| -> Result<Tensor> {
            vb.get(shape, name).with_context(|| {
                format!(
                    "{}: tensor `{name}` has the wrong shape",
                    weights_path.display()
                )
            })
        };
        let pooler = (
            get("bert.pooler.dense.weight", &[h, h])?,
            get("bert.pooler.dense.bias", &[h])?,
        );
        let classifier = (
            get("classifier.weight", &[num_labels, h])?,
            get("classifier.bias", &[num_labels])?,
        );
        ensure_all_loaded(&varmap, &loaded, &weights_path)?;
        // Tensors the classification model does not use (e.g. an MLM head) are not trained.
        {
            let mut vars = varmap.data().lock().expect("varmap lock poisoned");
            vars.retain(|name, _| {
                name.starts_with("bert.embeddings.")
                    || name.starts_with("bert.encoder.")
                    || name.starts_with("bert.pooler.")
                    || name.starts_with("classifier.")
            });
        }

        let activation = saved_activation(source, &config_json)?.unwrap_or(if num_labels == 1 {
            ScoreActivation::Sigmoid
        } else {
            ScoreActivation::Identity
        });
        let tokenizer_path = source.file("tokenizer.json")?;
        let tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer_path.display()))?;
        // The saved limit: a cross-encoder's `max_seq_length`, else the tokenizer's (a bi-encoder's
        // `max_seq_length` is for single texts, and sentence-transformers ignores it here too).
        let limit = |file: &str, key: &str| -> Result<Option<usize>> {
            Ok(source
                .optional_file(file)?
                .map(|p| read_json::<serde_json::Value>(&p))
                .transpose()?
                .and_then(|t| t[key].as_u64())
                .map(|m| m as usize))
        };
        let max_length = options
            .max_length
            .or(if has_head {
                limit("sentence_bert_config.json", "max_seq_length")?
            } else {
                None
            })
            .or(limit("tokenizer_config.json", "model_max_length")?)
            .unwrap_or(512)
            .min(config.max_position_embeddings);

        // The config becomes a sequence-classification one, as transformers writes it.
        let obj = config_json
            .as_object_mut()
            .context("config.json is not an object")?;
        obj.insert(
            "architectures".into(),
            serde_json::json!(["BertForSequenceClassification"]),
        );
        if !has_head {
            let id2label: serde_json::Map<String, serde_json::Value> = (0..num_labels)
                .map(|i| (i.to_string(), format!("LABEL_{i}").into()))
                .collect();
            let label2id: serde_json::Map<String, serde_json::Value> = (0..num_labels)
                .map(|i| (format!("LABEL_{i}"), i.into()))
                .collect();
            obj.insert("id2label".into(), id2label.into());
            obj.insert("label2id".into(), label2id.into());
        }
        obj.remove("sbert_ce_default_activation_function");

        let mut model = Self::from_parts(
            source.display_name(),
            bert,
            pooler,
            classifier,
            varmap,
            tokenizer,
            max_length,
            activation,
        )?;
        model.config_json = config_json;
        model.tokenizer_dir = tokenizer_path.parent().map(Path::to_path_buf);
        if let Some(path) = source.optional_file(super::fusion::FusionChoice::FILE)? {
            model.fusion =
                super::fusion::FusionChoice::load(path.parent().unwrap_or(Path::new(".")))?;
        }
        Ok(model)
    }

    /// Assembles a cross-encoder from parts (tests build tiny random models this way).
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        name: String,
        bert: BertModel,
        pooler: (Tensor, Tensor),
        classifier: (Tensor, Tensor),
        varmap: VarMap,
        mut tokenizer: Tokenizer,
        max_length: usize,
        activation: ScoreActivation,
    ) -> Result<Self> {
        let pad_id = unpad_and_truncate(&mut tokenizer, max_length)?;
        let num_labels = classifier.0.dim(0)?;
        let config_json = serde_json::to_value(&bert.config)?;
        Ok(Self {
            name,
            bert,
            pooler,
            classifier,
            varmap,
            tokenizer,
            max_length,
            num_labels,
            activation,
            pad_id,
            config_json,
            tokenizer_dir: None,
            fusion: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    pub fn device(&self) -> &Device {
        self.bert.device()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Tokenizes (query, document) pairs as `[CLS] q [SEP] d [SEP]` with segment ids 0 / 1,
    /// truncated longest-first to `max_length` (as the Python tokenizer with `truncation=True`).
    pub fn tokenize_pairs<Q: AsRef<str> + Sync, D: AsRef<str> + Sync>(
        &self,
        pairs: &[(Q, D)],
    ) -> Result<Vec<Encoding>> {
        pairs
            .par_iter()
            .map(|(q, d)| {
                let input = EncodeInput::Dual(q.as_ref().into(), d.as_ref().into());
                self.tokenizer.encode(input, true).map_err(|e| {
                    anyhow::anyhow!(
                        "tokenizing ({:?}, {:?}): {e}",
                        preview(q.as_ref()),
                        preview(d.as_ref())
                    )
                })
            })
            .collect()
    }

    /// Logits `[pairs, num_labels]` of tokenized pairs as one right-padded batch; differentiable
    /// in [`Mode::Train`] (the training forward pass).
    pub fn logits(&self, encodings: &[&Encoding], mode: Mode) -> Result<Tensor> {
        let longest = encodings
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0)
            .max(1);
        let n = encodings.len();
        let (mut ids, mut types, mut mask) = (
            Vec::with_capacity(n * longest),
            Vec::with_capacity(n * longest),
            Vec::with_capacity(n * longest),
        );
        for e in encodings {
            let len = e.get_ids().len();
            ids.extend_from_slice(e.get_ids());
            ids.extend(std::iter::repeat_n(self.pad_id, longest - len));
            types.extend_from_slice(e.get_type_ids());
            types.extend(std::iter::repeat_n(0u32, longest - len));
            mask.extend(std::iter::repeat_n(1u32, len));
            mask.extend(std::iter::repeat_n(0u32, longest - len));
        }
        let device = self.device();
        let shape = (n, longest);
        let ids = Tensor::from_vec(ids, shape, device)?;
        let types = Tensor::from_vec(types, shape, device)?;
        let mask = Tensor::from_vec(mask, shape, device)?;
        let cls = self
            .bert
            .forward_typed_first(&ids, Some(&types), &mask, mode)?;
        self.head(&cls, mode)
    }

    /// Logits of tokenized pairs without padding (CPU f32 inference; the same values as
    /// [`Self::logits`] in [`Mode::Infer`]).
    fn logits_packed(&self, encodings: &[&Encoding]) -> Result<Tensor> {
        let seq_lens: Vec<usize> = encodings.iter().map(|e| e.get_ids().len()).collect();
        let total: usize = seq_lens.iter().sum();
        let ids: Vec<u32> = encodings
            .iter()
            .flat_map(|e| e.get_ids().iter().copied())
            .collect();
        let types: Vec<u32> = encodings
            .iter()
            .flat_map(|e| e.get_type_ids().iter().copied())
            .collect();
        let device = self.device();
        let ids = Tensor::from_vec(ids, total, device)?;
        let types = Tensor::from_vec(types, total, device)?;
        let cls = self
            .bert
            .forward_packed_first(&ids, Some(&types), &seq_lens)?;
        self.head(&cls, Mode::Infer)
    }

    /// Pooler (`tanh(dense(·))`), dropout in training, and classifier on the `[CLS]` states.
    fn head(&self, cls: &Tensor, mode: Mode) -> Result<Tensor> {
        let pick = |t: &Tensor| match mode {
            Mode::Infer => t.detach(),
            Mode::Train(_) => t.clone(),
        };
        let pooled = linear(cls, &pick(&self.pooler.0), &pick(&self.pooler.1))?.tanh()?;
        // As `BertForSequenceClassification`: dropout between the pooler and the classifier.
        let pooled = mode.drop(pooled, crate::models::dropout::Site::Classifier)?;
        Ok(linear(
            &pooled,
            &pick(&self.classifier.0),
            &pick(&self.classifier.1),
        )?)
    }

    /// Raw logits `[pairs][num_labels]` of (query, document) pairs, in input order.
    pub fn predict_logits<Q: AsRef<str> + Sync, D: AsRef<str> + Sync>(
        &self,
        pairs: &[(Q, D)],
        options: &PredictOptions,
    ) -> Result<Vec<Vec<f32>>> {
        let encodings = self.tokenize_pairs(pairs)?;
        let lens: Vec<usize> = encodings.iter().map(|e| e.get_ids().len()).collect();
        let passes = plan_passes(
            &lens,
            options.batch_size.max(1),
            pass_token_cap(&self.bert, self.max_length),
        );
        let progress = Progress::new(pairs.len() as u64, "scoring pairs", options.progress);
        let packed = self.bert.supports_packed();
        let run = |pass: &Vec<usize>| -> Result<Vec<Vec<f32>>> {
            crate::interrupt::check()?;
            let group: Vec<&Encoding> = pass.iter().map(|&i| &encodings[i]).collect();
            let logits = if packed {
                self.logits_packed(&group)?
            } else {
                self.logits(&group, Mode::Infer)?
            };
            progress.inc(pass.len() as u64);
            Ok(logits
                .to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?
                .to_vec2()?)
        };
        // As the bi-encoder: passes side by side on the CPU, one after another elsewhere.
        let results: Vec<Vec<Vec<f32>>> = if packed {
            passes.par_iter().map(run).collect::<Result<_>>()?
        } else {
            passes.iter().map(run).collect::<Result<_>>()?
        };
        progress.finish();
        let mut out = vec![Vec::new(); pairs.len()];
        for (pass, rows) in passes.iter().zip(results) {
            for (&i, row) in pass.iter().zip(rows) {
                out[i] = row;
            }
        }
        Ok(out)
    }

    /// Scores of (query, document) pairs as `CrossEncoder.predict` returns them: the activation
    /// applied to each logit (one number per pair for a one-label model).
    pub fn predict<Q: AsRef<str> + Sync, D: AsRef<str> + Sync>(
        &self,
        pairs: &[(Q, D)],
        options: &PredictOptions,
    ) -> Result<Vec<Vec<f32>>> {
        let activation = options.activation.unwrap_or(self.activation);
        Ok(self
            .predict_logits(pairs, options)?
            .into_iter()
            .map(|row| row.into_iter().map(|x| activation.apply(x)).collect())
            .collect())
    }

    /// One score per pair; an error for models with several labels.
    pub fn score<Q: AsRef<str> + Sync, D: AsRef<str> + Sync>(
        &self,
        pairs: &[(Q, D)],
        options: &PredictOptions,
    ) -> Result<Vec<f32>> {
        if self.num_labels != 1 {
            bail!(
                "{} has {} labels: one relevance score per pair needs a one-label model (use predict)",
                self.name,
                self.num_labels
            );
        }
        Ok(self
            .predict(pairs, options)?
            .into_iter()
            .map(|r| r[0])
            .collect())
    }

    /// The `top_k` documents for `query`, best first, as (index into `documents`, score).
    pub fn rank<D: AsRef<str> + Sync>(
        &self,
        query: &str,
        documents: &[D],
        top_k: Option<usize>,
        options: &PredictOptions,
    ) -> Result<Vec<(usize, f32)>> {
        let pairs: Vec<(&str, &str)> = documents.iter().map(|d| (query, d.as_ref())).collect();
        let scores = self.score(&pairs, options)?;
        let mut ranked: Vec<(usize, f32)> = scores.into_iter().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(top_k.unwrap_or(ranked.len()));
        Ok(ranked)
    }

    /// Scores a table: rows `{query, document}` gain a `score` column, rows `{query, documents:
    /// [...]}` a `scores` list column (one score per document, in order). Without those names the
    /// columns are taken by position, as the trainers read them: the first text column is the
    /// query, the second text column (or the first list column) the document(s). `origin` names
    /// the table in errors.
    pub fn score_frame(
        &self,
        frame: &polars::prelude::DataFrame,
        origin: &str,
        options: &PredictOptions,
    ) -> Result<polars::prelude::DataFrame> {
        use crate::data::table::str_column;
        use polars::prelude::*;
        let named = |name: &str, kind: fn(&DataType) -> bool| -> Option<String> {
            match frame.column(name) {
                Ok(c) if kind(c.dtype()) => Some(name.to_string()),
                _ => None,
            }
        };
        let is_text = |d: &DataType| d == &DataType::String;
        let is_list = |d: &DataType| matches!(d, DataType::List(inner) if inner.as_ref() == &DataType::String);
        let texts: Vec<String> = frame
            .columns()
            .iter()
            .filter(|c| is_text(c.dtype()))
            .map(|c| c.name().to_string())
            .collect();
        let Some(query_col) = named("query", is_text).or_else(|| texts.first().cloned()) else {
            bail!("{origin}: needs a query column (`query`, or a first text column)");
        };
        let queries = str_column(frame, &query_col)?;
        let mut out = frame.clone();
        let document =
            named("document", is_text).or_else(|| texts.iter().find(|c| **c != query_col).cloned());
        let list = named("documents", is_list).or_else(|| {
            frame
                .columns()
                .iter()
                .find(|c| is_list(c.dtype()))
                .map(|c| c.name().to_string())
        });
        if let (Some(doc_col), None) = (&document, &list) {
            let docs = str_column(frame, doc_col)?;
            let pairs: Vec<(&str, &str)> = queries
                .iter()
                .zip(&docs)
                .map(|(q, d)| (q.as_str(), d.as_str()))
                .collect();
            out.with_column(Column::new("score".into(), self.score(&pairs, options)?))?;
            return Ok(out);
        }
        let Some(list_col) = list else {
            bail!("{origin}: expected a `document` column (pairs) or a `documents` list column");
        };
        let lists = frame
            .column(&list_col)?
            .as_materialized_series()
            .list()?
            .clone();
        let mut docs: Vec<Vec<String>> = Vec::with_capacity(lists.len());
        for row in 0..lists.len() {
            let s = lists.get_as_series(row).unwrap_or_default();
            let texts = s.str().map_err(|_| {
                anyhow::anyhow!("{origin}: row {}: `documents` must be strings", row + 1)
            })?;
            docs.push(
                texts
                    .iter()
                    .map(|x| x.unwrap_or_default().to_string())
                    .collect(),
            );
        }
        let pairs: Vec<(&str, &str)> = queries
            .iter()
            .zip(&docs)
            .flat_map(|(q, ds)| ds.iter().map(move |d| (q.as_str(), d.as_str())))
            .collect();
        let scores = self.score(&pairs, options)?;
        let mut at = 0;
        let per_row: Vec<Series> = docs
            .iter()
            .map(|ds| {
                at += ds.len();
                Series::new("".into(), &scores[at - ds.len()..at])
            })
            .collect();
        out.with_column(Column::new("scores".into(), per_row))?;
        Ok(out)
    }

    /// Every trainable weight under its checkpoint name (checkpoints and `model.safetensors`).
    pub fn save_weights(&self, path: &Path) -> Result<()> {
        super::save::save_varmap(&self.varmap, path)
    }

    /// Writes the model as sentence-transformers 6 saves a `CrossEncoder`: the Hugging Face
    /// sequence-classification folder (`config.json`, `model.safetensors`, tokenizer files) that
    /// `AutoModelForSequenceClassification` loads, plus `config_sentence_transformers.json`
    /// (the activation) and the module files `CrossEncoder(path)` reads.
    pub fn save(&self, dir: &Path) -> Result<()> {
        use super::save::write_json;
        use serde_json::json;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut config = self.config_json.clone();
        if let Some(obj) = config.as_object_mut() {
            obj.insert(
                "sentence_transformers".into(),
                json!({"activation_fn": self.activation.torch_name(), "version": "ragtune"}),
            );
        }
        write_json(&dir.join("config.json"), &config)?;
        write_json(
            &dir.join("config_sentence_transformers.json"),
            &json!({
                "__version__": {"ragtune": env!("CARGO_PKG_VERSION")},
                "model_type": "CrossEncoder",
                "activation_fn": self.activation.torch_name(),
                "prompts": {}, "default_prompt_name": null,
            }),
        )?;
        write_json(
            &dir.join("sentence_bert_config.json"),
            &json!({
                "transformer_task": "sequence-classification",
                "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
                "module_output_name": "scores",
                "max_seq_length": self.max_length,
            }),
        )?;
        write_json(
            &dir.join("modules.json"),
            &json!([{"idx": 0, "name": "0", "path": "",
                     "type": "sentence_transformers.base.modules.transformer.Transformer"}]),
        )?;
        self.save_weights(&dir.join("model.safetensors"))?;
        super::save::save_tokenizer(&self.tokenizer, self.tokenizer_dir.as_deref(), dir)
    }
}

/// The activation sentence-transformers stored with the model, where it stored one.
fn saved_activation(
    source: &ModelSource,
    config_json: &serde_json::Value,
) -> Result<Option<ScoreActivation>> {
    if let Some(path) = source.optional_file("config_sentence_transformers.json")? {
        let st: serde_json::Value = read_json(&path)?;
        if let Some(name) = st["activation_fn"].as_str() {
            return ScoreActivation::from_torch_name(name)
                .map(Some)
                .with_context(|| path.display().to_string());
        }
    }
    let older = config_json["sentence_transformers"]["activation_fn"]
        .as_str()
        .or_else(|| config_json["sbert_ce_default_activation_function"].as_str());
    older.map(ScoreActivation::from_torch_name).transpose()
}

/// A standard normal draw (Box–Muller) from the project's seeded generator.
fn normal(rng: &mut Rng) -> f64 {
    let u1 = rng.unit().max(f64::MIN_POSITIVE);
    let u2 = rng.unit();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
