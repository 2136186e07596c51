//! A Llama-family decoder (Llama 2/3, SmolLM2, Qwen2-style biases), one architecture for
//! inference and training. Inference: a KV cache and batches of left-padded prompts
//! ([`Llama::forward`]). Training: full-sequence hidden states through differentiable ops only
//! ([`Llama::forward_train`]), right-padded or packed rows, gradients reaching the LoRA adapters
//! of [`super::lora`] and never the frozen base.
//!
//! Weights arrive under GGUF's names (the Hugging Face loader renames to them). Dense weights are
//! dequantized to f32 (candle's quantized matmul quantizes activations to 8 bits, which turns
//! small models' answers into nonsense); with `quantized`, linear weights stay in their GGUF
//! blocks (QLoRA) and are dequantized one layer at a time when used.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, IndexOp, Tensor, D};

use super::lora::{BaseWeight, LoraConfig, LoraLinear, LLAMA_LINEARS};
use crate::rng::Rng;

/// The shape of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub rope_theta: f32,
    pub rms_eps: f64,
    pub max_positions: usize,
    /// GGUF stores q/k rows permuted for rotation of adjacent pairs; Hugging Face checkpoints
    /// rotate the two halves of each head.
    pub rope_interleaved: bool,
}

impl LlamaConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}

/// Removes a tensor from the loaded set, checking its shape.
fn take(
    weights: &mut HashMap<String, Tensor>,
    name: &str,
    shape: &[usize],
    device: &Device,
) -> Result<Tensor> {
    let t = weights
        .remove(name)
        .with_context(|| format!("model weights have no tensor `{name}`"))?;
    if t.dims() != shape {
        bail!(
            "tensor `{name}` has shape {:?}, the config implies {shape:?}",
            t.dims()
        );
    }
    Ok(t.to_dtype(DType::F32)?.to_device(device)?)
}

/// GGUF's names of a block's linear layers, in [`LLAMA_LINEARS`] order.
pub const GGUF_LINEARS: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

struct Block {
    attn_norm: Tensor,
    /// q, k, v, o, gate, up, down ([`LLAMA_LINEARS`] order).
    linears: Vec<LoraLinear>,
    ffn_norm: Tensor,
}

impl Block {
    fn q(&self) -> &LoraLinear {
        &self.linears[0]
    }
    fn k(&self) -> &LoraLinear {
        &self.linears[1]
    }
    fn v(&self) -> &LoraLinear {
        &self.linears[2]
    }
    fn o(&self) -> &LoraLinear {
        &self.linears[3]
    }
    fn gate(&self) -> &LoraLinear {
        &self.linears[4]
    }
    fn up(&self) -> &LoraLinear {
        &self.linears[5]
    }
    fn down(&self) -> &LoraLinear {
        &self.linears[6]
    }
}

pub struct Llama {
    cfg: LlamaConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: LoraLinear,
    /// The output projection is the embedding matrix.
    tied: bool,
    /// Inverse frequencies of the rotary embedding, (head_dim / 2).
    inv_freq: Vec<f32>,
    device: Device,
}

/// Keys and values of every layer for a batch, preallocated for the whole generation.
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position from `len` on (the next forward writes over them).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Keeps only the given batch rows (finished sequences leave the batch).
    pub fn retain_rows(&mut self, rows: &Tensor) -> Result<()> {
        for (k, v) in &mut self.layers {
            *k = k.index_select(rows, 0)?;
            *v = v.index_select(rows, 0)?;
        }
        Ok(())
    }
}

impl Llama {
    /// Builds the model from tensors named as in GGUF (`token_embd.weight`, `blk.N.attn_q.weight`, …):
    /// `weights` in f32, `quantized` the linear weights kept in GGUF blocks (QLoRA). With `q8`,
    /// decoding steps multiply by 8-bit copies of the weights (see [`LoraLinear`]).
    pub fn new(
        cfg: LlamaConfig,
        mut weights: HashMap<String, Tensor>,
        mut quantized: HashMap<String, QTensor>,
        q8: bool,
        device: &Device,
    ) -> Result<Self> {
        let (h, kv, hd) = (cfg.hidden, cfg.kv_heads * cfg.head_dim(), cfg.head_dim());
        let embed = take(
            &mut weights,
            "token_embd.weight",
            &[cfg.vocab_size, h],
            device,
        )?;
        let mut blocks = Vec::with_capacity(cfg.layers);
        let shapes = [
            (h, h),
            (kv, h),
            (kv, h),
            (h, h),
            (cfg.intermediate, h),
            (cfg.intermediate, h),
            (h, cfg.intermediate),
        ];
        for i in 0..cfg.layers {
            let p = format!("blk.{i}");
            let mut linears = Vec::with_capacity(7);
            for (name, (out, inp)) in GGUF_LINEARS.iter().zip(shapes) {
                let key = format!("{p}.{name}.weight");
                let base = match quantized.remove(&key) {
                    Some(q) => {
                        if q.shape().dims() != [out, inp] {
                            bail!(
                                "tensor `{key}` has shape {:?}, the config implies [{out}, {inp}]",
                                q.shape().dims()
                            );
                        }
                        BaseWeight::Quantized(Arc::new(q))
                    }
                    None => BaseWeight::Dense(take(&mut weights, &key, &[out, inp], device)?),
                };
                let bias = weights
                    .remove(&format!("{p}.{name}.bias"))
                    .map(|b| b.to_dtype(DType::F32)?.to_device(device))
                    .transpose()?;
                linears.push(LoraLinear::new(base, bias, q8)?);
            }
            blocks.push(Block {
                attn_norm: take(&mut weights, &format!("{p}.attn_norm.weight"), &[h], device)?,
                ffn_norm: take(&mut weights, &format!("{p}.ffn_norm.weight"), &[h], device)?,
                linears,
            });
        }
        let norm = take(&mut weights, "output_norm.weight", &[h], device)?;
        // Small models tie the output projection to the embedding.
        let tied =
            !weights.contains_key("output.weight") && !quantized.contains_key("output.weight");
        let head = match (
            weights.remove("output.weight"),
            quantized.remove("output.weight"),
        ) {
            (Some(w), _) => BaseWeight::Dense(w.to_dtype(DType::F32)?.to_device(device)?),
            (None, Some(q)) => BaseWeight::Dense(q.dequantize(device)?),
            (None, None) => BaseWeight::Dense(embed.clone()),
        };
        let lm_head = LoraLinear::new(head, None, q8)?;
        let inv_freq = (0..hd / 2)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f32 / hd as f32))
            .collect();
        Ok(Self {
            cfg,
            embed,
            blocks,
            norm,
            lm_head,
            tied,
            inv_freq,
            device: device.clone(),
        })
    }

    /// Adds fresh LoRA adapters to the target layers of every block (`A` seeded by
    /// `config.seed`, `B` zero). Layers that already have one are refused.
    pub fn add_lora(&mut self, config: &LoraConfig) -> Result<()> {
        config.validate()?;
        let targets = config.targets()?;
        let mut rng = Rng::new(config.seed);
        for block in &mut self.blocks {
            for (name, linear) in LLAMA_LINEARS.iter().zip(&mut block.linears) {
                if targets.iter().any(|t| t == name) {
                    if linear.adapter().is_some() {
                        bail!("the model already has LoRA adapters");
                    }
                    linear.add_adapter(config, &mut rng)?;
                }
            }
        }
        Ok(())
    }

    /// Every linear layer as (layer index, Hugging Face module name, layer), in order.
    pub fn linears(&self) -> impl Iterator<Item = (usize, &'static str, &LoraLinear)> {
        self.blocks.iter().enumerate().flat_map(|(i, b)| {
            LLAMA_LINEARS
                .iter()
                .zip(&b.linears)
                .map(move |(name, l)| (i, *name, l))
        })
    }

    /// The same, mutable (loading adapters, merging).
    pub fn linears_mut(&mut self) -> impl Iterator<Item = (usize, &'static str, &mut LoraLinear)> {
        self.blocks.iter_mut().enumerate().flat_map(|(i, b)| {
            LLAMA_LINEARS
                .iter()
                .zip(&mut b.linears)
                .map(move |(name, l)| (i, *name, l))
        })
    }

    /// Folds every adapter into its base weight (decoding then costs what the base costs).
    pub fn merge_adapters(&mut self) -> Result<()> {
        for (_, _, l) in self.linears_mut() {
            l.merge()?;
        }
        Ok(())
    }

    /// Takes merged adapters out of the base weights again.
    pub fn unmerge_adapters(&mut self) -> Result<()> {
        for (_, _, l) in self.linears_mut() {
            l.unmerge()?;
        }
        Ok(())
    }

    /// Every weight under its Hugging Face name (`model.layers.0.self_attn.q_proj.weight`, …) in
    /// f32, adapters folded in, q/k rows in Hugging Face's order: a `LlamaForCausalLM` checkpoint.
    pub fn hf_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let cfg = &self.cfg;
        let mut out = HashMap::new();
        out.insert("model.embed_tokens.weight".to_string(), self.embed.clone());
        out.insert("model.norm.weight".to_string(), self.norm.clone());
        if !self.tied {
            out.insert(
                "lm_head.weight".to_string(),
                self.lm_head.effective_weight()?,
            );
        }
        for (i, block) in self.blocks.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.insert(
                format!("{p}.input_layernorm.weight"),
                block.attn_norm.clone(),
            );
            out.insert(
                format!("{p}.post_attention_layernorm.weight"),
                block.ffn_norm.clone(),
            );
            for (name, linear) in LLAMA_LINEARS.iter().zip(&block.linears) {
                let module = super::peft::module_path(i, name);
                let heads = match *name {
                    "q_proj" if cfg.rope_interleaved => Some(cfg.heads),
                    "k_proj" if cfg.rope_interleaved => Some(cfg.kv_heads),
                    _ => None,
                };
                let rows = |t: Tensor| -> Result<Tensor> {
                    Ok(match heads {
                        Some(h) => {
                            let idx = Tensor::new(rope_rows(h, cfg.head_dim(), true), t.device())?;
                            t.index_select(&idx, 0)?
                        }
                        None => t,
                    })
                };
                out.insert(
                    format!("{module}.weight"),
                    rows(linear.effective_weight()?)?,
                );
                if let Some(b) = linear.bias() {
                    out.insert(format!("{module}.bias"), rows(b.clone())?);
                }
            }
        }
        Ok(out)
    }

    /// Whether the output projection is the embedding matrix.
    pub fn tied_embeddings(&self) -> bool {
        self.tied
    }

    /// Bytes held by the frozen linear weights (quantized ones at their block size).
    pub fn base_linear_bytes(&self) -> usize {
        self.linears().map(|(_, _, l)| l.base().bytes()).sum()
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    pub fn new_cache(&self, batch: usize, capacity: usize) -> Result<KvCache> {
        let shape = (batch, self.cfg.kv_heads, capacity, self.cfg.head_dim());
        let layers = (0..self.cfg.layers)
            .map(|_| {
                Ok((
                    Tensor::zeros(shape, DType::F32, &self.device)?,
                    Tensor::zeros(shape, DType::F32, &self.device)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(KvCache {
            layers,
            len: 0,
            capacity,
        })
    }

    /// Runs `tokens` (batch × new positions) after what the cache holds and returns the logits of
    /// each row's last position, (batch, vocab). `pads[b]` left-padding positions of row b are
    /// masked out and do not advance its positions.
    pub fn forward(&self, tokens: &Tensor, pads: &[usize], cache: &mut KvCache) -> Result<Tensor> {
        Ok(self.forward_tail(tokens, pads, cache, 1)?.squeeze(1)?)
    }

    /// As [`forward`](Self::forward), with the logits of each row's last `tail` positions,
    /// (batch, tail, vocab) (scoring a continuation needs a logit per token of it).
    pub fn forward_tail(
        &self,
        tokens: &Tensor,
        pads: &[usize],
        cache: &mut KvCache,
        tail: usize,
    ) -> Result<Tensor> {
        let (b, s) = tokens.dims2()?;
        if tail == 0 || tail > s {
            bail!("cannot return the last {tail} of {s} positions");
        }
        let start = cache.len;
        if start + s > cache.capacity {
            bail!(
                "sequence of {} tokens exceeds the cache of {}",
                start + s,
                cache.capacity
            );
        }
        if start + s > self.cfg.max_positions {
            bail!(
                "sequence of {} tokens exceeds the model's context of {}",
                start + s,
                self.cfg.max_positions
            );
        }
        let decoding = s == 1;
        let (cos, sin) = self.rotary(b, s, start, pads)?;
        // Built by the first layer whose attention needs it (the CPU kernels do not).
        let mut mask = None;
        let mut x = self
            .embed
            .index_select(&tokens.flatten_all()?, 0)?
            .reshape((b, s, self.cfg.hidden))?;
        for (block, (kc, vc)) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            let h = candle_nn::ops::rms_norm(&x, &block.attn_norm, self.cfg.rms_eps as f32)?;
            let attn = self.attention(block, &h, &cos, &sin, &mut mask, kc, vc, start, pads)?;
            x = (x + attn)?;
            let h = candle_nn::ops::rms_norm(&x, &block.ffn_norm, self.cfg.rms_eps as f32)?;
            let gated = (candle_nn::ops::silu(&block.gate().forward(&h, decoding)?)?
                * block.up().forward(&h, decoding)?)?;
            x = (x + block.down().forward(&gated, decoding)?)?;
        }
        cache.len = start + s;
        // Only the last positions are needed (the last one, for the next token).
        let last = x.i((.., s - tail.., ..))?.contiguous()?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, self.cfg.rms_eps as f32)?;
        self.lm_head.forward(&last, decoding)
    }

    /// cos/sin tables (batch, s, head_dim / 2) at each row's own positions.
    fn rotary(&self, b: usize, s: usize, start: usize, pads: &[usize]) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(b * s * half);
        let mut sin = Vec::with_capacity(b * s * half);
        for &pad in pads.iter().take(b) {
            for j in 0..s {
                let pos = (start + j).saturating_sub(pad) as f32;
                for &f in &self.inv_freq {
                    let (sn, cs) = (pos * f).sin_cos();
                    cos.push(cs);
                    sin.push(sn);
                }
            }
        }
        Ok((
            Tensor::from_vec(cos, (b, s, half), &self.device)?,
            Tensor::from_vec(sin, (b, s, half), &self.device)?,
        ))
    }

    /// Additive mask (batch, 1, 1, s, start + s): causal, and padding never attended to.
    fn mask(&self, b: usize, s: usize, start: usize, pads: &[usize]) -> Result<Tensor> {
        let total = start + s;
        let mut m = vec![0f32; b * s * total];
        for (row, &pad) in pads.iter().take(b).enumerate() {
            for j in 0..s {
                let query = start + j;
                for key in 0..total {
                    // A padding position attends to itself only: a row with every key masked
                    // would turn into NaN and poison the cache through 0 × NaN.
                    let hidden = if query < pad { key != query } else { key < pad };
                    if key > query || hidden {
                        m[(row * s + j) * total + key] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        Ok(Tensor::from_vec(m, (b, 1, 1, s, total), &self.device)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        block: &Block,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &mut Option<Tensor>,
        k_cache: &mut Tensor,
        v_cache: &mut Tensor,
        start: usize,
        pads: &[usize],
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let decoding = s == 1;
        let (heads, kv_heads, hd) = (self.cfg.heads, self.cfg.kv_heads, self.cfg.head_dim());
        let groups = heads / kv_heads;
        let split = |t: Tensor, n: usize| -> Result<Tensor> {
            Ok(t.reshape((b, s, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = split(block.q().forward(x, decoding)?, heads)?;
        let k = split(block.k().forward(x, decoding)?, kv_heads)?;
        let v = split(block.v().forward(x, decoding)?, kv_heads)?;
        let (q, k) = if self.cfg.rope_interleaved {
            (
                candle_nn::rotary_emb::rope_i(&q, cos, sin)?,
                candle_nn::rotary_emb::rope_i(&k, cos, sin)?,
            )
        } else {
            (
                candle_nn::rotary_emb::rope(&q, cos, sin)?,
                candle_nn::rotary_emb::rope(&k, cos, sin)?,
            )
        };
        k_cache.slice_set(&k, 2, start)?;
        v_cache.slice_set(&v, 2, start)?;
        let total = start + s;
        if start == 0 && !decoding && super::train_attention::supported(&q) {
            // A prompt from an empty cache: the training kernel's causal attention, with each
            // row's left padding a segment of its own that the prompt never attends to.
            let segments: Vec<Vec<usize>> = pads
                .iter()
                .take(b)
                .map(|&p| if p == 0 { vec![s] } else { vec![p, s - p] })
                .collect();
            let merge = |t: &Tensor, n: usize| t.transpose(1, 2)?.reshape((b, s, n * hd));
            let qkv = Tensor::cat(
                &[
                    merge(&q, heads)?,
                    merge(&k, kv_heads)?,
                    merge(&v, kv_heads)?,
                ],
                2,
            )?;
            let out = super::train_attention::causal_attention(&qkv, &segments, heads, kv_heads)?;
            return block.o().forward(&out, decoding);
        }
        if decoding && super::cached_attention::applies(&q) {
            let out = super::cached_attention::attention(&q, k_cache, v_cache, total, pads)?;
            return block.o().forward(&out, decoding);
        }
        let mask = match mask {
            Some(m) => m,
            None => mask.insert(self.mask(b, s, start, pads)?),
        };
        let keys = k_cache.narrow(2, 0, total)?;
        let values = v_cache.narrow(2, 0, total)?;
        // Grouped-query attention without copying keys: the query heads sharing a key head are
        // stacked as extra rows, (b, kv_heads, groups * s, hd).
        let q = q.reshape((b, kv_heads, groups * s, hd))?;
        let scores = (q.matmul(&keys.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        let scores = scores
            .reshape((b, kv_heads, groups, s, total))?
            .broadcast_add(mask)?;
        let probs =
            candle_nn::ops::softmax_last_dim(&scores)?.reshape((b, kv_heads, groups * s, total))?;
        let out = probs.matmul(&values.contiguous()?)?;
        let out = out
            .reshape((b, heads, s, hd))?
            .transpose(1, 2)?
            .reshape((b, s, heads * hd))?;
        block.o().forward(&out, decoding)
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Training forward pass over `tokens` (batch × len, right-padded): the final hidden
    /// states after the last norm, (batch, len, hidden), built from differentiable ops only
    /// (candle's fused RMSNorm, rope and softmax have no backward pass). `segments[b]` are the
    /// lengths of the sequences packed into row `b` (one entry for an unpacked row); each starts
    /// at position 0 and attends causally within itself only. Padding after the last segment
    /// attends causally to the row and is never read by real tokens. With `rng`, adapter
    /// dropout draws its masks from it, layer by layer in order.
    pub fn forward_train(
        &self,
        tokens: &Tensor,
        segments: &[Vec<usize>],
        mut rng: Option<&mut Rng>,
    ) -> Result<Tensor> {
        let (b, s) = tokens.dims2()?;
        if segments.len() != b {
            bail!("{} segment lists for {b} rows", segments.len());
        }
        if s > self.cfg.max_positions {
            bail!(
                "rows of {s} tokens exceed the model's context of {}",
                self.cfg.max_positions
            );
        }
        let (cos, sin, mask) = self.train_layout(s, segments)?;
        let mut x = self
            .embed
            .index_select(&tokens.flatten_all()?, 0)?
            .reshape((b, s, self.cfg.hidden))?;
        let eps = self.cfg.rms_eps;
        for block in &self.blocks {
            let h = rms_norm_train(&x, &block.attn_norm, eps)?;
            let attn =
                self.attention_train(block, &h, &cos, &sin, &mask, segments, rng.as_deref_mut())?;
            x = (x + attn)?;
            let h = rms_norm_train(&x, &block.ffn_norm, eps)?;
            let gate = block.gate().forward_train(&h, rng.as_deref_mut())?;
            let up = block.up().forward_train(&h, rng.as_deref_mut())?;
            let gated = super::train_ops::swiglu(&gate, &up)?;
            let down = block.down().forward_train(&gated, rng.as_deref_mut())?;
            x = (x + down)?;
        }
        rms_norm_train(&x, &self.norm, eps)
    }

    /// Logits of hidden-state rows `[n, hidden]` → `[n, vocab]`, differentiable in the rows
    /// (only the rows a loss reads need the output projection).
    pub fn logits_train(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward_train(hidden, None)
    }

    /// Rotary tables (batch, len, 1, head_dim / 2) at each token's position within its
    /// segment, and the additive mask (batch, 1, 1, len, len): causal within a segment.
    fn train_layout(&self, s: usize, segments: &[Vec<usize>]) -> Result<(Tensor, Tensor, Tensor)> {
        let b = segments.len();
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(b * s * half);
        let mut sin = Vec::with_capacity(b * s * half);
        let mut mask = vec![f32::NEG_INFINITY; b * s * s];
        for (row, segs) in segments.iter().enumerate() {
            let used: usize = segs.iter().sum();
            if used > s {
                bail!("row {row}: segments of {used} tokens in a row of {s}");
            }
            // The padding tail is one more segment, so that every query sees itself.
            let mut bounds = vec![];
            let mut at = 0;
            for &len in segs.iter().chain(std::iter::once(&(s - used))) {
                bounds.push((at, at + len));
                at += len;
            }
            for (start, end) in bounds {
                for q in start..end {
                    let pos = (q - start) as f32;
                    for &f in &self.inv_freq {
                        let (sn, cs) = (pos * f).sin_cos();
                        cos.push(cs);
                        sin.push(sn);
                    }
                    let m = &mut mask[(row * s + q) * s..(row * s + q + 1) * s];
                    m[start..=q].fill(0.0);
                }
            }
        }
        Ok((
            Tensor::from_vec(cos, (b, s, 1, half), &self.device)?,
            Tensor::from_vec(sin, (b, s, 1, half), &self.device)?,
            Tensor::from_vec(mask, (b, 1, 1, s, s), &self.device)?,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn attention_train(
        &self,
        block: &Block,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        segments: &[Vec<usize>],
        mut rng: Option<&mut Rng>,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let (heads, kv_heads, hd) = (self.cfg.heads, self.cfg.kv_heads, self.cfg.head_dim());
        let interleaved = self.cfg.rope_interleaved;
        // (batch, len, heads, head_dim), rotated.
        let heads_of = |t: Tensor, n: usize, rotate: bool| -> Result<Tensor> {
            let t = t.reshape((b, s, n, hd))?;
            if rotate {
                rope_train(&t, cos, sin, interleaved)
            } else {
                Ok(t)
            }
        };
        let q = heads_of(block.q().forward_train(x, rng.as_deref_mut())?, heads, true)?;
        let k = heads_of(
            block.k().forward_train(x, rng.as_deref_mut())?,
            kv_heads,
            true,
        )?;
        let v = heads_of(
            block.v().forward_train(x, rng.as_deref_mut())?,
            kv_heads,
            false,
        )?;
        let out = if super::train_attention::supported(x) {
            let qkv = Tensor::cat(
                &[
                    q.reshape((b, s, heads * hd))?,
                    k.reshape((b, s, kv_heads * hd))?,
                    v.reshape((b, s, kv_heads * hd))?,
                ],
                2,
            )?;
            super::train_attention::causal_attention(&qkv, segments, heads, kv_heads)?
        } else {
            let groups = heads / kv_heads;
            // Grouped-query attention: the query heads sharing a key head stacked as extra rows.
            let q = q
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, kv_heads, groups * s, hd))?;
            let k = k.transpose(1, 2)?.contiguous()?;
            let v = v.transpose(1, 2)?.contiguous()?;
            let matmul = super::precision::matmul;
            let scores = (matmul(&q, &k.t()?.contiguous()?)? * (1.0 / (hd as f64).sqrt()))?;
            let scores = scores
                .reshape((b, kv_heads, groups, s, s))?
                .broadcast_add(mask)?;
            let probs = candle_nn::ops::softmax(&scores, D::Minus1)?.reshape((
                b,
                kv_heads,
                groups * s,
                s,
            ))?;
            matmul(&probs, &v)?
                .reshape((b, heads, s, hd))?
                .transpose(1, 2)?
                .reshape((b, s, heads * hd))?
        };
        block.o().forward_train(&out, rng)
    }
}

/// Row order of q_proj / k_proj outputs: `to_hf[r]` is the GGUF row holding Hugging Face row `r`
/// (`heads` heads of `head_dim`); `to_gguf` the inverse.
pub fn rope_rows(heads: usize, head_dim: usize, to_hf: bool) -> Vec<u32> {
    let half = head_dim / 2;
    let mut idx = vec![0u32; heads * head_dim];
    for h in 0..heads {
        for t in 0..2 {
            for j in 0..half {
                let hf = h * head_dim + t * half + j;
                let gguf = h * head_dim + j * 2 + t;
                if to_hf {
                    idx[hf] = gguf as u32;
                } else {
                    idx[gguf] = hf as u32;
                }
            }
        }
    }
    idx
}

/// RMSNorm with a backward pass (a fused CPU kernel, composed ops elsewhere).
fn rms_norm_train(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(super::train_ops::rms_norm(x, w, eps)?)
}

/// Rotary embedding with a backward pass (a fused CPU kernel, composed ops elsewhere) on `x` (batch, len, heads, head_dim) with tables
/// (batch, len, 1, head_dim / 2): adjacent pairs rotated (`interleaved`, GGUF's layout) or the
/// two halves of each head (Hugging Face's).
fn rope_train(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> Result<Tensor> {
    if super::train_ops::uses_kernels(x) {
        return Ok(super::train_ops::rope(x, cos, sin, interleaved)?);
    }
    let (b, s, h, d) = x.dims4()?;
    if interleaved {
        let pairs = x.reshape((b, s, h, d / 2, 2))?;
        let (x0, x1) = (pairs.narrow(4, 0, 1)?, pairs.narrow(4, 1, 1)?);
        let (c, sn) = (cos.unsqueeze(4)?, sin.unsqueeze(4)?);
        let r0 = (x0.broadcast_mul(&c)? - x1.broadcast_mul(&sn)?)?;
        let r1 = (x0.broadcast_mul(&sn)? + x1.broadcast_mul(&c)?)?;
        Ok(Tensor::cat(&[r0, r1], 4)?.reshape((b, s, h, d))?)
    } else {
        let (x0, x1) = (x.narrow(3, 0, d / 2)?, x.narrow(3, d / 2, d / 2)?);
        let r0 = (x0.broadcast_mul(cos)? - x1.broadcast_mul(sin)?)?;
        let r1 = (x1.broadcast_mul(cos)? + x0.broadcast_mul(sin)?)?;
        Ok(Tensor::cat(&[r0, r1], 3)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_row_orders_are_inverse_and_match_llama_cpp() {
        // llama.cpp: w.reshape(heads, 2, hd/2, …).swapaxes(1, 2): GGUF row (h, j, t) is HF row (h, t, j).
        let to_hf = rope_rows(2, 8, true);
        let to_gguf = rope_rows(2, 8, false);
        for r in 0..16 {
            assert_eq!(to_gguf[to_hf[r] as usize] as usize, r);
        }
        // HF row 1 (head 0, first half, j=1) sits at GGUF row 2; HF row 4 (second half, j=0) at 1.
        assert_eq!(to_hf[1], 2);
        assert_eq!(to_hf[4], 1);
        assert_eq!(to_hf[8 + 5], 8 + 3);
    }

    fn random_model(interleaved: bool, seed: u64) -> Llama {
        let cfg = LlamaConfig {
            vocab_size: 50,
            hidden: 32,
            intermediate: 48,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            rope_theta: 10_000.0,
            rms_eps: 1e-5,
            max_positions: 64,
            rope_interleaved: interleaved,
        };
        let mut rng = Rng::new(seed);
        let dev = Device::Cpu;
        let mut rand = |shape: &[usize], scale: f64| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| ((rng.unit() * 2.0 - 1.0) * scale) as f32)
                .collect();
            Tensor::from_vec(v, shape, &dev).unwrap()
        };
        let mut w = HashMap::new();
        w.insert("token_embd.weight".to_string(), rand(&[50, 32], 1.0));
        w.insert(
            "output_norm.weight".to_string(),
            (rand(&[32], 0.2) + 1.0).unwrap(),
        );
        let kv = 2 * 8;
        for i in 0..2 {
            let p = format!("blk.{i}");
            for (name, shape) in [
                ("attn_q", [32, 32]),
                ("attn_k", [kv, 32]),
                ("attn_v", [kv, 32]),
                ("attn_output", [32, 32]),
                ("ffn_gate", [48, 32]),
                ("ffn_up", [48, 32]),
                ("ffn_down", [32, 48]),
            ] {
                w.insert(format!("{p}.{name}.weight"), rand(&shape, 0.3));
            }
            w.insert(format!("{p}.attn_q.bias"), rand(&[32], 0.1));
            w.insert(
                format!("{p}.attn_norm.weight"),
                (rand(&[32], 0.2) + 1.0).unwrap(),
            );
            w.insert(
                format!("{p}.ffn_norm.weight"),
                (rand(&[32], 0.2) + 1.0).unwrap(),
            );
        }
        Llama::new(cfg, w, HashMap::new(), false, &dev).unwrap()
    }

    fn last_logits_infer(m: &Llama, ids: &[u32]) -> Vec<f32> {
        let mut cache = m.new_cache(1, ids.len()).unwrap();
        let t = Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        m.forward(&t, &[0], &mut cache)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn training_forward_computes_what_inference_computes_in_both_rope_layouts() {
        for interleaved in [false, true] {
            let m = random_model(interleaved, 7);
            let ids = [3u32, 17, 5, 44, 9, 21, 2];
            let t = Tensor::new(&ids[..], &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let hidden = m.forward_train(&t, &[vec![ids.len()]], None).unwrap();
            for len in [1, 4, ids.len()] {
                let row = hidden.i((0, len - 1..len, ..)).unwrap();
                let train: Vec<f32> = m
                    .logits_train(&row)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let infer = last_logits_infer(&m, &ids[..len]);
                let d = max_diff(&train, &infer);
                assert!(d < 1e-4, "interleaved {interleaved}, prefix {len}: {d}");
            }
        }
    }

    #[test]
    fn packed_and_padded_rows_equal_separate_sequences() {
        let m = random_model(true, 3);
        let (a, b) = ([4u32, 8, 15, 16], [23u32, 42, 7]);
        let alone = |ids: &[u32]| {
            let t = Tensor::new(ids, &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            m.forward_train(&t, &[vec![ids.len()]], None)
                .unwrap()
                .squeeze(0)
                .unwrap()
        };
        let (ha, hb) = (alone(&a), alone(&b));
        // Packed into one row of 9 with 2 padding positions, and b right-padded in a batch.
        let packed: Vec<u32> = a.iter().chain(&b).copied().chain([0, 0]).collect();
        let padded: Vec<u32> = b.iter().copied().chain([0; 6]).collect();
        let t = Tensor::new(vec![packed, padded], &Device::Cpu).unwrap();
        let h = m.forward_train(&t, &[vec![4, 3], vec![3]], None).unwrap();
        let rows = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
        assert!(max_diff(&rows(&h.i((0, 0..4, ..)).unwrap()), &rows(&ha)) < 1e-5);
        assert!(max_diff(&rows(&h.i((0, 4..7, ..)).unwrap()), &rows(&hb)) < 1e-5);
        assert!(max_diff(&rows(&h.i((1, 0..3, ..)).unwrap()), &rows(&hb)) < 1e-5);
    }

    /// Logits of every step: a left-padded prompt batch, then decoding steps of fixed tokens,
    /// the middle row leaving the batch after two steps, then two new positions at once.
    fn decode_logits(m: &Llama) -> Vec<Vec<f32>> {
        let dev = Device::Cpu;
        let prompts: [&[u32]; 3] = [&[3, 17, 5, 44, 9, 21, 2], &[8, 30, 12, 6, 1], &[40, 2, 11]];
        let width = 7;
        let mut pads: Vec<usize> = prompts.iter().map(|p| width - p.len()).collect();
        let ids: Vec<u32> = prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(0, width - p.len()).chain(p.iter().copied()))
            .collect();
        let mut cache = m.new_cache(3, 20).unwrap();
        let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let tokens = Tensor::from_vec(ids, (3, width), &dev).unwrap();
        let mut out = vec![flat(m.forward(&tokens, &pads, &mut cache).unwrap())];
        let mut rows = 3;
        for step in 0..5u32 {
            if step == 2 {
                cache
                    .retain_rows(&Tensor::new(&[0u32, 2], &dev).unwrap())
                    .unwrap();
                pads = vec![pads[0], pads[2]];
                rows = 2;
            }
            let next: Vec<u32> = (0..rows as u32)
                .map(|r| (7 * step + 3 * r + 1) % 50)
                .collect();
            let t = Tensor::from_vec(next, (rows, 1), &dev).unwrap();
            out.push(flat(m.forward(&t, &pads, &mut cache).unwrap()));
        }
        let t = Tensor::new(&[[5u32, 9], [12, 4]], &dev).unwrap();
        out.push(flat(m.forward_tail(&t, &pads, &mut cache, 2).unwrap()));
        out
    }

    #[test]
    fn cpu_kernels_decode_what_the_composed_ops_decode() {
        use super::super::kernels::{with, Kernels};
        for interleaved in [false, true] {
            let m = random_model(interleaved, 11);
            let native = with(Kernels::Native, || decode_logits(&m));
            let portable = with(Kernels::Portable, || decode_logits(&m));
            assert_eq!(native.len(), portable.len());
            for (step, (a, b)) in native.iter().zip(&portable).enumerate() {
                assert_eq!(a.len(), b.len());
                assert!(a.iter().all(|v| v.is_finite()), "step {step}");
                let d = max_diff(a, b);
                assert!(d < 1e-5, "interleaved {interleaved}, step {step}: {d}");
            }
            // The batch really decodes: logits move from step to step.
            assert!(max_diff(&native[1][..50], &native[2][..50]) > 1e-3);
        }
    }
}
