//! A local decoder on candle: loads a GGUF file or a Hugging Face folder, renders chat prompts,
//! and decodes batches of prompts together (left-padded, one KV cache, finished rows leaving the
//! batch) with greedy or sampled decoding, stop strings and token limits.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::constrain::{self, CopySpans, SpanChecker};
use super::template::ChatTemplate;
use super::{
    sample, ChatModel, ChatRequest, Completion, FinishReason, GenerationParams, Message, OnAnswer,
};
use crate::models::hub::ModelSource;
use crate::models::llama::{KvCache, Llama};
use crate::rng::Rng;

/// Prompts decoded together by default. Measured on 2 cores with SmolLM2-135M (16 identical
/// 107-token prompts, 48 new tokens): 58 generated tokens/s at 8 rows, 93-98 at 16, 108 at 32;
/// 16 keeps most of the gain while fewer rows wait on the longest answer of their group.
pub const DEFAULT_MAX_BATCH: usize = 16;

/// How a local model runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalOptions {
    /// Prompts decoded together. Larger batches raise throughput until the CPU is busy.
    pub max_batch: usize,
    /// Decoding steps multiply by 8-bit (Q8_0) copies of the weights: about 4x less memory
    /// traffic per token. Prompts always run in f32.
    pub q8_decode: bool,
    /// Keep the blocks' linear weights in their GGUF block format (QLoRA training); they are
    /// dequantized one layer at a time when used. GGUF files only.
    pub quantized_base: bool,
    /// A PEFT LoRA adapter folder to load onto the model and merge into its weights.
    pub adapter: Option<std::path::PathBuf>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            max_batch: DEFAULT_MAX_BATCH,
            q8_decode: true,
            quantized_base: false,
            adapter: None,
        }
    }
}

/// Throughput of the last generation call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

impl GenerationStats {
    pub fn prefill_tokens_per_second(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_seconds.max(1e-9)
    }

    pub fn decode_tokens_per_second(&self) -> f64 {
        self.generated_tokens as f64 / self.decode_seconds.max(1e-9)
    }

    fn add(&mut self, other: &GenerationStats) {
        self.prompt_tokens += other.prompt_tokens;
        self.generated_tokens += other.generated_tokens;
        self.prefill_seconds += other.prefill_seconds;
        self.decode_seconds += other.decode_seconds;
    }
}

pub struct LocalLlm {
    name: String,
    model: Llama,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    /// The template's source and BOS text, for saving.
    template_source: Option<String>,
    bos: Option<String>,
    eos: Vec<u32>,
    /// The tokenizer's end-of-sequence token (what fine-tuning appends to plain text).
    eos_token: Option<u32>,
    options: LocalOptions,
    last_stats: Mutex<GenerationStats>,
}

impl LocalLlm {
    /// Loads `spec`: a `.gguf` path, `owner/repo/file.gguf` from the hub cache, or a local folder
    /// or `owner/repo` holding a Hugging Face Llama checkpoint.
    pub fn load(spec: &str, options: &LocalOptions) -> Result<Self> {
        crate::runtime::flush_denormals();
        if options.max_batch == 0 {
            bail!("max_batch must be at least 1");
        }
        let device = crate::models::device::default_device();
        let parts = if spec.ends_with(".gguf") {
            let path = Path::new(spec);
            let file = if path.is_file() {
                path.to_path_buf()
            } else if path.is_absolute() || spec.starts_with('.') {
                bail!("GGUF file {spec} does not exist");
            } else {
                let mut it = spec.splitn(3, '/');
                let (owner, repo, file) = match (it.next(), it.next(), it.next()) {
                    (Some(o), Some(r), Some(f)) => (o, r, f),
                    _ => bail!(
                        "model `{spec}` is neither a GGUF file on disk nor owner/repo/file.gguf on the hub"
                    ),
                };
                ModelSource::parse(&format!("{owner}/{repo}"))?.file(file)?
            };
            super::gguf::load(&file, &device, options.quantized_base)
                .with_context(|| format!("loading model `{spec}`"))?
        } else {
            if options.quantized_base {
                bail!("model `{spec}`: a quantized base needs a GGUF file (a safetensors folder holds no quantized blocks)");
            }
            super::hf::load(&ModelSource::parse(spec)?, &device)
                .with_context(|| format!("loading model `{spec}`"))?
        };
        let template = match &parts.chat_template {
            Some(t) => Some(ChatTemplate::new(
                t,
                parts.bos.clone(),
                parts
                    .eos
                    .first()
                    .and_then(|&i| parts.tokenizer.id_to_token(i)),
            )?),
            None => None,
        };
        let eos_token = parts.eos.first().copied();
        let mut eos = parts.eos.clone();
        // Chat models end a turn with their end-of-turn token even where metadata names another EOS.
        for t in ["<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>"] {
            eos.extend(parts.tokenizer.token_to_id(t));
        }
        eos.sort_unstable();
        eos.dedup();
        let mut llm = Self {
            name: spec.to_string(),
            model: Llama::new(
                parts.config,
                parts.weights,
                parts.quantized,
                options.q8_decode,
                &device,
            )?,
            tokenizer: parts.tokenizer,
            template,
            template_source: parts.chat_template.clone(),
            bos: parts.bos.clone(),
            eos,
            eos_token,
            options: options.clone(),
            last_stats: Mutex::new(GenerationStats::default()),
        };
        if let Some(dir) = &options.adapter {
            llm.load_adapter(dir, true)?;
        }
        Ok(llm)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// How the model was named when loaded (`local:` spec without the prefix), and with which
    /// adapter.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renames the model (the name keys cached answers: a tuned model must not share its base's).
    pub fn set_name(&mut self, name: String) {
        self.name = name;
    }

    /// The network (training reads it; [`model_mut`](Self::model_mut) adds adapters).
    pub fn model(&self) -> &Llama {
        &self.model
    }

    pub fn model_mut(&mut self) -> &mut Llama {
        &mut self.model
    }

    pub fn template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// The end-of-sequence token id the model's metadata names.
    pub fn eos_token(&self) -> Option<u32> {
        self.eos_token
    }

    /// Token ids that end an answer (end of text and end of turn).
    pub fn eos(&self) -> &[u32] {
        &self.eos
    }

    /// Writes the model, adapters folded in, as a Hugging Face `LlamaForCausalLM` folder
    /// (`config.json`, `model.safetensors` in f32, `tokenizer.json`, `tokenizer_config.json` with
    /// the chat template), which transformers and ragtune load as any checkpoint.
    pub fn save_merged(&self, dir: &Path) -> Result<()> {
        use serde_json::json;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let cfg = self.model.config();
        let has_bias = self.model.linears().any(|(_, _, l)| l.bias().is_some());
        let token = |id: Option<u32>| id.and_then(|i| self.tokenizer.id_to_token(i));
        let bos_id = self
            .bos
            .as_deref()
            .and_then(|b| self.tokenizer.token_to_id(b));
        let write = |name: &str, v: &serde_json::Value| -> Result<()> {
            std::fs::write(dir.join(name), serde_json::to_string_pretty(v)? + "\n")
                .with_context(|| format!("writing {}", dir.join(name).display()))
        };
        write(
            "config.json",
            &json!({
                "architectures": [if has_bias { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
                "model_type": if has_bias { "qwen2" } else { "llama" },
                "vocab_size": cfg.vocab_size,
                "hidden_size": cfg.hidden,
                "intermediate_size": cfg.intermediate,
                "num_hidden_layers": cfg.layers,
                "num_attention_heads": cfg.heads,
                "num_key_value_heads": cfg.kv_heads,
                "head_dim": cfg.head_dim(),
                "hidden_act": "silu",
                "max_position_embeddings": cfg.max_positions,
                "rms_norm_eps": cfg.rms_eps,
                "rope_theta": cfg.rope_theta,
                "tie_word_embeddings": self.model.tied_embeddings(),
                "attention_bias": has_bias,
                "bos_token_id": bos_id,
                "eos_token_id": self.eos_token,
                "torch_dtype": "float32",
            }),
        )?;
        crate::models::save::write_safetensors(
            &self.model.hf_tensors()?,
            &dir.join("model.safetensors"),
        )?;
        self.tokenizer
            .save(dir.join("tokenizer.json"), true)
            .map_err(|e| anyhow::anyhow!("writing tokenizer.json: {e}"))?;
        write(
            "tokenizer_config.json",
            &json!({
                "tokenizer_class": "PreTrainedTokenizerFast",
                "chat_template": self.template_source,
                "bos_token": self.bos,
                "eos_token": token(self.eos_token),
                "pad_token": token(self.eos_token),
            }),
        )
    }

    /// Loads a PEFT LoRA adapter folder onto the model and, with `merge`, folds it into the
    /// weights (decoding then costs what the base costs). Warns when the adapter names another
    /// base model.
    pub fn load_adapter(&mut self, dir: &Path, merge: bool) -> Result<()> {
        let (_, base) = crate::models::peft::load_adapter(&mut self.model, dir)
            .with_context(|| format!("loading the adapter in {}", dir.display()))?;
        if !base.is_empty()
            && base != self.name
            && !self.name.ends_with(&base)
            && !base.ends_with(&self.name)
        {
            eprintln!(
                "note: the adapter in {} was trained on `{base}`, loaded here on `{}`",
                dir.display(),
                self.name
            );
        }
        if merge {
            self.model.merge_adapters()?;
        }
        // Answers cached under the model's name must not be mistaken for the base model's.
        self.name = format!("{}+adapter:{}", self.name, dir.display());
        Ok(())
    }

    pub fn config(&self) -> &super::LlamaConfig {
        self.model.config()
    }

    /// Throughput of the most recent `complete` / `chat_batch` call.
    pub fn last_stats(&self) -> GenerationStats {
        *self.last_stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The prompt text of a conversation, from the model's chat template.
    pub fn render(&self, messages: &[Message]) -> Result<String> {
        match &self.template {
            Some(t) => t.render(messages),
            None => bail!(
                "model `{}` has no chat template; give it plain text to continue instead",
                self.name
            ),
        }
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("tokenizing the prompt: {e}"))?;
        if enc.get_ids().is_empty() {
            bail!("the prompt is empty");
        }
        Ok(enc.get_ids().to_vec())
    }

    /// The logits for the token after `ids` (one forward pass, no cache kept).
    pub fn next_token_logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut cache = self.model.new_cache(1, ids.len())?;
        let tokens = Tensor::new(ids, self.model.device())?.unsqueeze(0)?;
        Ok(self
            .model
            .forward(&tokens, &[0], &mut cache)?
            .squeeze(0)?
            .to_vec1()?)
    }

    /// The log-probability of each of `options` as the continuation of `prefix` (summed over its
    /// tokens): the prefix runs once, each option on top of it. Forced-choice evaluation picks the
    /// option with the highest.
    pub fn continuation_logprobs(&self, prefix: &[u32], options: &[Vec<u32>]) -> Result<Vec<f64>> {
        if prefix.is_empty() {
            bail!("the prefix is empty");
        }
        let longest = options.iter().map(Vec::len).max().unwrap_or(0);
        let device = self.model.device();
        let mut cache = self.model.new_cache(1, prefix.len() + longest)?;
        let first = self
            .model
            .forward(
                &Tensor::new(prefix, device)?.unsqueeze(0)?,
                &[0],
                &mut cache,
            )?
            .squeeze(0)?;
        let first = candle_nn::ops::log_softmax(&first, 0)?.to_vec1::<f32>()?;
        let mut out = Vec::with_capacity(options.len());
        for option in options {
            let Some(&head) = option.first() else {
                bail!("an empty option");
            };
            let mut total = first[head as usize] as f64;
            if option.len() > 1 {
                cache.truncate(prefix.len());
                let rest = &option[..option.len() - 1];
                let logits = self
                    .model
                    .forward_tail(
                        &Tensor::new(rest, device)?.unsqueeze(0)?,
                        &[0],
                        &mut cache,
                        rest.len(),
                    )?
                    .squeeze(0)?;
                let logp = candle_nn::ops::log_softmax(&logits, 1)?.to_vec2::<f32>()?;
                for (row, &t) in logp.iter().zip(&option[1..]) {
                    total += row[t as usize] as f64;
                }
            }
            out.push(total);
        }
        Ok(out)
    }

    /// Continues each text (no chat template).
    pub fn complete(
        &self,
        texts: &[String],
        params: &[GenerationParams],
    ) -> Result<Vec<Completion>> {
        let prompts = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>>>()?;
        self.generate(&prompts, params)
    }

    /// Decodes every prompt, `max_batch` at a time, grouping prompts of similar length.
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        params: &[GenerationParams],
    ) -> Result<Vec<Completion>> {
        assert_eq!(prompts.len(), params.len(), "one parameter set per prompt");
        for p in params {
            p.validate()?;
        }
        let mut order: Vec<usize> = (0..prompts.len()).collect();
        order.sort_by_key(|&i| prompts[i].len());
        let mut out: Vec<Option<Completion>> = vec![None; prompts.len()];
        let mut stats = GenerationStats::default();
        for group in order.chunks(self.options.max_batch) {
            crate::interrupt::check()?;
            let g_prompts: Vec<&[u32]> = group.iter().map(|&i| prompts[i].as_slice()).collect();
            let g_params: Vec<&GenerationParams> = group.iter().map(|&i| &params[i]).collect();
            let (done, s) = self.generate_group(&g_prompts, &g_params)?;
            stats.add(&s);
            for (&i, c) in group.iter().zip(done) {
                out[i] = Some(c);
            }
        }
        *self.last_stats.lock().unwrap_or_else(|e| e.into_inner()) = stats;
        Ok(out
            .into_iter()
            .map(|c| c.expect("every prompt decoded"))
            .collect())
    }

    fn generate_group(
        &self,
        prompts: &[&[u32]],
        params: &[&GenerationParams],
    ) -> Result<(Vec<Completion>, GenerationStats)> {
        let device = self.model.device();
        let width = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        let budget = params.iter().map(|p| p.max_tokens).max().unwrap_or(0);
        let mut pads: Vec<usize> = prompts.iter().map(|p| width - p.len()).collect();
        let mut ids = Vec::with_capacity(prompts.len() * width);
        for (p, &pad) in prompts.iter().zip(&pads) {
            ids.extend(std::iter::repeat_n(0u32, pad));
            ids.extend_from_slice(p);
        }
        let capacity = (width + budget).min(self.model.config().max_positions);
        let mut cache: KvCache = self.model.new_cache(prompts.len(), capacity)?;
        let mut stats = GenerationStats {
            prompt_tokens: prompts.iter().map(|p| p.len()).sum(),
            ..Default::default()
        };
        let started = Instant::now();
        let tokens = Tensor::from_vec(ids, (prompts.len(), width), device)?;
        let mut logits = self.model.forward(&tokens, &pads, &mut cache)?;
        stats.prefill_seconds = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut rows: Vec<Row> = params
            .iter()
            .zip(prompts)
            .map(|(p, prompt)| Row::new(p, prompt.len(), &self.tokenizer))
            .collect::<Result<_>>()?;
        // Batch position → row index of the sequences still decoding.
        let mut active: Vec<usize> = (0..rows.len()).collect();
        loop {
            let logits_rows = logits.to_vec2::<f32>()?;
            let mut next = Vec::with_capacity(active.len());
            let mut keep = Vec::with_capacity(active.len());
            for (pos, &r) in active.iter().enumerate() {
                let row = &mut rows[r];
                let token = row.next_token(&logits_rows[pos], &self.tokenizer)?;
                stats.generated_tokens += 1;
                if row.push(
                    token,
                    &self.eos,
                    &self.tokenizer,
                    cache.len() + 1 >= capacity,
                )? {
                    keep.push(pos as u32);
                    next.push(token);
                }
            }
            if keep.is_empty() {
                break;
            }
            crate::interrupt::check()?;
            if keep.len() < active.len() {
                cache.retain_rows(&Tensor::new(keep.as_slice(), device)?)?;
                active = keep.iter().map(|&p| active[p as usize]).collect();
                pads = keep.iter().map(|&p| pads[p as usize]).collect();
            }
            let tokens = Tensor::from_vec(next, (active.len(), 1), device)?;
            logits = self.model.forward(&tokens, &pads, &mut cache)?;
        }
        stats.decode_seconds = started.elapsed().as_secs_f64();
        let completions = rows.into_iter().map(Row::finish).collect::<Result<_>>()?;
        Ok((completions, stats))
    }
}

/// One sequence being decoded.
struct Row<'a> {
    params: &'a GenerationParams,
    rng: Rng,
    generated: Vec<u32>,
    prompt_tokens: usize,
    text: String,
    reason: Option<FinishReason>,
    /// The request's copy constraint, prepared.
    spans: Option<SpanChecker<'a>>,
    /// Tokens to emit before sampling again (a close marker the constraint forces).
    forced: VecDeque<u32>,
    /// The constraint's close marker as tokens, with the space before it (empty without one).
    close_ids: Vec<u32>,
}

impl<'a> Row<'a> {
    fn new(params: &'a GenerationParams, prompt_tokens: usize, tok: &Tokenizer) -> Result<Self> {
        let close_ids = match &params.copy_spans {
            Some(c) => tok
                .encode(format!(" {}", c.close), false)
                .map_err(|e| anyhow::anyhow!("encoding the close marker: {e}"))?
                .get_ids()
                .to_vec(),
            None => Vec::new(),
        };
        Ok(Self {
            params,
            rng: Rng::new(params.seed),
            generated: Vec::new(),
            prompt_tokens,
            text: String::new(),
            reason: None,
            spans: params.copy_spans.as_ref().map(CopySpans::checker),
            forced: VecDeque::new(),
            close_ids,
        })
    }

    /// The next token: sampled from `logits`, or under a copy constraint the likeliest (in
    /// sampling order) of the first [`constrain::MAX_TRIES`] that keeps the open span a passage
    /// of the source; when none does, or (`close_before_limit`) when the budget has room only
    /// for the close marker, the span's close marker follows.
    fn next_token(&mut self, logits: &[f32], tok: &Tokenizer) -> Result<u32> {
        let (temperature, top_p) = (self.params.temperature, self.params.top_p);
        if let Some(t) = self.forced.pop_front() {
            return Ok(t);
        }
        let token = sample::next_token(logits, temperature, top_p, &mut self.rng);
        let Some(spans) = &self.spans else {
            return Ok(token);
        };
        if spans.open_span(&self.text).is_none() {
            return Ok(token);
        }
        let close_before_limit = self
            .params
            .copy_spans
            .as_ref()
            .is_some_and(|c| c.close_before_limit);
        let left = self.params.max_tokens.saturating_sub(self.generated.len());
        if close_before_limit && left <= self.close_ids.len() {
            return Ok(self.force_close(token));
        }
        let mut logits = logits.to_vec();
        let mut candidate = token;
        let mut ids = self.generated.clone();
        for _ in 0..constrain::MAX_TRIES {
            ids.push(candidate);
            let text = tok
                .decode(&ids, true)
                .map_err(|e| anyhow::anyhow!("decoding generated tokens: {e}"))?;
            ids.pop();
            if spans.allows(&text) {
                return Ok(candidate);
            }
            logits[candidate as usize] = f32::NEG_INFINITY;
            candidate = sample::next_token(&logits, temperature, top_p, &mut self.rng);
        }
        Ok(self.force_close(token))
    }

    /// Queues the close marker and returns its first token (`fallback` if it has none).
    fn force_close(&mut self, fallback: u32) -> u32 {
        self.forced.extend(&self.close_ids);
        self.forced.pop_front().unwrap_or(fallback)
    }

    /// Takes one token; false when the sequence is finished.
    fn push(&mut self, token: u32, eos: &[u32], tok: &Tokenizer, cache_full: bool) -> Result<bool> {
        if eos.contains(&token) {
            self.reason = Some(FinishReason::Stop);
            return Ok(false);
        }
        self.generated.push(token);
        self.text = tok
            .decode(&self.generated, true)
            .map_err(|e| anyhow::anyhow!("decoding generated tokens: {e}"))?;
        if let Some(cut) = self
            .params
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.text.find(s.as_str()))
            .min()
        {
            self.text.truncate(cut);
            self.reason = Some(FinishReason::Stop);
            return Ok(false);
        }
        if let Some(end) = super::marked_line_end(&self.text, &self.params.end_line_after) {
            self.text.truncate(end);
            self.reason = Some(FinishReason::Stop);
            return Ok(false);
        }
        if self.generated.len() >= self.params.max_tokens || cache_full {
            self.reason = Some(FinishReason::Length);
            return Ok(false);
        }
        Ok(true)
    }

    fn finish(self) -> Result<Completion> {
        Ok(Completion {
            text: self.text,
            finish_reason: self.reason.unwrap_or(FinishReason::Length),
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.generated.len(),
            rag: None,
        })
    }
}

impl ChatModel for LocalLlm {
    fn name(&self) -> &str {
        &self.name
    }

    fn chat_each(
        &self,
        requests: &[ChatRequest],
        on_answer: &OnAnswer<'_>,
    ) -> Vec<Result<Completion>> {
        // Requests whose prompt fails keep their error; the others decode together.
        let mut answers = Vec::with_capacity(requests.len());
        let (mut decoding, mut ids, mut params) = (Vec::new(), Vec::new(), Vec::new());
        for (i, r) in requests.iter().enumerate() {
            match self.render(&r.messages).and_then(|p| self.encode(&p)) {
                Ok(prompt) => {
                    decoding.push(i);
                    ids.push(prompt);
                    params.push(r.params.clone());
                    answers.push(Err(anyhow::anyhow!("not decoded")));
                }
                Err(e) => {
                    let e = Err(e);
                    on_answer(i, &e);
                    answers.push(e);
                }
            }
        }
        match self.generate(&ids, &params) {
            Ok(done) => {
                for (i, c) in decoding.into_iter().zip(done) {
                    answers[i] = Ok(c);
                    on_answer(i, &answers[i]);
                }
            }
            Err(e) => {
                let msg = format!("{e:#}");
                for i in decoding {
                    answers[i] = Err(anyhow::anyhow!("{msg}"));
                    on_answer(i, &answers[i]);
                }
            }
        }
        answers
    }
}
