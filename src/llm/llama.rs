//! A Llama-family decoder (Llama 2/3, SmolLM2, Qwen2-style biases) for inference with a KV cache
//! and batches of left-padded prompts. Weights arrive under GGUF's names (the Hugging Face loader
//! renames to them), already dequantized: candle's quantized matmul turns small models' answers
//! into nonsense (activations are quantized to 8 bits), dequantized weights do not.

use anyhow::{bail, Context, Result};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use std::collections::HashMap;

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

struct Linear {
    /// (out, in), as PyTorch stores it.
    weight: Tensor,
    bias: Option<Tensor>,
    /// The weight in 8-bit blocks for decoding steps, which read every weight for a few rows and
    /// are bound by memory bandwidth (a quarter of the f32 bytes).
    q8: Option<QMatMul>,
}

/// Decoding batches up to this size use the 8-bit weights.
const Q8_MAX_ROWS: usize = 4;

impl Linear {
    fn new(weight: Tensor, bias: Option<Tensor>, q8: bool) -> Result<Self> {
        let q8 = if q8 && weight.dim(1)? % 32 == 0 {
            Some(QMatMul::from_qtensor(QTensor::quantize(
                &weight,
                GgmlDType::Q8_0,
            )?)?)
        } else {
            None
        };
        Ok(Self { weight, bias, q8 })
    }

    /// `decoding`: one new position per sequence, where the 8-bit weights pay off; prompts
    /// (many rows) run through f32 GEMM.
    fn forward(&self, x: &Tensor, decoding: bool) -> Result<Tensor> {
        // Matmul on 2-D rows: a broadcast 3-D weight is slower on candle's CPU backend.
        let dims = x.dims().to_vec();
        let rows = x.elem_count() / dims[dims.len() - 1];
        let x2 = x.reshape((rows, dims[dims.len() - 1]))?;
        let y = match &self.q8 {
            // Quantized matmul works row by row; wider batches are faster through GEMM.
            Some(q) if decoding && rows <= Q8_MAX_ROWS => q.forward(&x2)?,
            _ => x2.matmul(&self.weight.t()?)?,
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = dims;
        *out.last_mut().unwrap() = self.weight.dim(0)?;
        Ok(y.reshape(out)?)
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

struct Block {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

pub struct Llama {
    cfg: LlamaConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Linear,
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
    /// Builds the model from tensors named as in GGUF (`token_embd.weight`, `blk.N.attn_q.weight`, …).
    /// With `q8`, decoding steps multiply by 8-bit copies of the weights (see [`Linear`]).
    pub fn new(
        cfg: LlamaConfig,
        mut weights: HashMap<String, Tensor>,
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
        for i in 0..cfg.layers {
            let p = format!("blk.{i}");
            let mut linear = |name: &str, out: usize, inp: usize| -> Result<Linear> {
                let weight = take(
                    &mut weights,
                    &format!("{p}.{name}.weight"),
                    &[out, inp],
                    device,
                )?;
                let bias = weights
                    .remove(&format!("{p}.{name}.bias"))
                    .map(|b| b.to_dtype(DType::F32)?.to_device(device))
                    .transpose()?;
                Linear::new(weight, bias, q8)
            };
            let q = linear("attn_q", h, h)?;
            let k = linear("attn_k", kv, h)?;
            let v = linear("attn_v", kv, h)?;
            let o = linear("attn_output", h, h)?;
            let gate = linear("ffn_gate", cfg.intermediate, h)?;
            let up = linear("ffn_up", cfg.intermediate, h)?;
            let down = linear("ffn_down", h, cfg.intermediate)?;
            blocks.push(Block {
                attn_norm: take(&mut weights, &format!("{p}.attn_norm.weight"), &[h], device)?,
                ffn_norm: take(&mut weights, &format!("{p}.ffn_norm.weight"), &[h], device)?,
                q,
                k,
                v,
                o,
                gate,
                up,
                down,
            });
        }
        let norm = take(&mut weights, "output_norm.weight", &[h], device)?;
        // Small models tie the output projection to the embedding.
        let lm_head = match weights.remove("output.weight") {
            Some(w) => Linear::new(w.to_dtype(DType::F32)?.to_device(device)?, None, q8)?,
            None => Linear::new(embed.clone(), None, q8)?,
        };
        let inv_freq = (0..hd / 2)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f32 / hd as f32))
            .collect();
        Ok(Self {
            cfg,
            embed,
            blocks,
            norm,
            lm_head,
            inv_freq,
            device: device.clone(),
        })
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
        let (b, s) = tokens.dims2()?;
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
        let mask = self.mask(b, s, start, pads)?;
        let mut x = self
            .embed
            .index_select(&tokens.flatten_all()?, 0)?
            .reshape((b, s, self.cfg.hidden))?;
        for (block, (kc, vc)) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            let h = candle_nn::ops::rms_norm(&x, &block.attn_norm, self.cfg.rms_eps as f32)?;
            let attn = self.attention(block, &h, &cos, &sin, &mask, kc, vc, start, decoding)?;
            x = (x + attn)?;
            let h = candle_nn::ops::rms_norm(&x, &block.ffn_norm, self.cfg.rms_eps as f32)?;
            let gated = (candle_nn::ops::silu(&block.gate.forward(&h, decoding)?)?
                * block.up.forward(&h, decoding)?)?;
            x = (x + block.down.forward(&gated, decoding)?)?;
        }
        cache.len = start + s;
        // Only the last position of each row is needed for the next token.
        let last = x.i((.., s - 1, ..))?.contiguous()?;
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
        mask: &Tensor,
        k_cache: &mut Tensor,
        v_cache: &mut Tensor,
        start: usize,
        decoding: bool,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let (heads, kv_heads, hd) = (self.cfg.heads, self.cfg.kv_heads, self.cfg.head_dim());
        let groups = heads / kv_heads;
        let split = |t: Tensor, n: usize| -> Result<Tensor> {
            Ok(t.reshape((b, s, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = split(block.q.forward(x, decoding)?, heads)?;
        let k = split(block.k.forward(x, decoding)?, kv_heads)?;
        let v = split(block.v.forward(x, decoding)?, kv_heads)?;
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
        block.o.forward(&out, decoding)
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }
}
