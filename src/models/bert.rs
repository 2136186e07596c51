//! A BERT encoder written for both inference and training.
//!
//! candle-transformers' BERT uses fused kernels (layer norm, softmax) that have no backward pass,
//! so a loss on its output silently trains nothing. This module runs the same computation in two
//! modes: [`Mode::Train`] composes differentiable primitive ops, [`Mode::Infer`] uses the fused
//! kernels and detaches the weights so no autograd graph is kept. Weight names are exactly the
//! checkpoint's (`embeddings.word_embeddings.weight`, `encoder.layer.0.attention.self.query.weight`,
//! …), so a model round-trips to Hugging Face files unchanged.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::dropout::{Dropout, DropoutRates, Site};

/// Whether a forward pass must be differentiable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Fused kernels, detached weights: fast, no gradients.
    Infer,
    /// Differentiable ops only: every weight receives a gradient. With a [`Dropout`], its masks
    /// apply where Hugging Face's BERT drops out in training mode (see [`super::dropout`]).
    Train(Option<Dropout>),
}

impl Mode {
    pub fn is_train(self) -> bool {
        matches!(self, Mode::Train(_))
    }

    /// The pass's dropout (training only).
    pub fn dropout(self) -> Option<Dropout> {
        match self {
            Mode::Train(d) => d,
            Mode::Infer => None,
        }
    }

    /// `x` with `site`'s dropout applied when this pass drops out.
    pub(crate) fn drop(self, x: Tensor, site: Site) -> Result<Tensor> {
        match self.dropout() {
            Some(d) => d.apply(&x, site),
            None => Ok(x),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// The exact erf-based GELU (Hugging Face's "gelu").
    Gelu,
    /// The tanh approximation.
    #[serde(alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluNew,
    Relu,
}

/// The fields of a Hugging Face `config.json` that a BERT-family encoder needs.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_activation")]
    pub hidden_act: Activation,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
    #[serde(default)]
    pub model_type: Option<String>,
    /// Dropout in training (Hugging Face's default 0.1 when the file has none).
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// A classification head's dropout; `hidden_dropout_prob` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_dropout: Option<f64>,
}

fn default_dropout() -> f64 {
    0.1
}

fn default_activation() -> Activation {
    Activation::Gelu
}
fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_position_embedding_type() -> String {
    "absolute".into()
}

impl BertConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The dropout rates training uses by default, as `model.train()` does in PyTorch.
    pub fn dropout_rates(&self) -> DropoutRates {
        DropoutRates {
            hidden: self.hidden_dropout_prob as f32,
            attention: self.attention_probs_dropout_prob as f32,
            classifier: self.classifier_dropout.unwrap_or(self.hidden_dropout_prob) as f32,
        }
    }

    /// Rejects configurations this implementation would compute wrongly instead of failing later.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            anyhow::bail!(
                "config.json: hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if self.position_embedding_type != "absolute" {
            anyhow::bail!(
                "config.json: position_embedding_type `{}` is not supported (only `absolute`)",
                self.position_embedding_type
            );
        }
        Ok(())
    }
}

/// A linear layer `y = x Wᵀ + b` that matmuls on a 2-D view of the input (broadcasting the weight
/// over a batch dimension makes candle's backward ~40 % slower).
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn new(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        let bound = 1.0 / (in_dim as f64).sqrt();
        let weight = vb.get_with_hints(
            (out_dim, in_dim),
            "weight",
            candle_nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let bias = vb.get_with_hints(out_dim, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self { weight, bias })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let (w, b) = weights_for(mode, &self.weight, &self.bias);
        linear(x, &w, &b)
    }
}

/// `x Wᵀ + b` over the last dimension of `x`.
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let in_dim = *dims.last().expect("linear input has a last dim");
    let rows = x.elem_count() / in_dim;
    let y = super::precision::matmul(&x.reshape((rows, in_dim))?, &w.t()?)?.broadcast_add(b)?;
    let mut out_dims = dims;
    *out_dims.last_mut().unwrap() = w.dim(0)?;
    y.reshape(out_dims)
}

#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn new(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let (w, b) = weights_for(mode, &self.weight, &self.bias);
        // candle's fused kernel has no backward pass and no f64 implementation; ours has both.
        match mode {
            Mode::Infer if x.dtype() != DType::F64 => {
                candle_nn::ops::layer_norm(&x.contiguous()?, &w, &b, self.eps as f32)
            }
            _ => super::train_ops::layer_norm(x, &w, &b, self.eps),
        }
    }

    /// The parameters for the fused inference kernels (f32 CPU only).
    fn fused(&self) -> super::fused::Norm<'_> {
        super::fused::Norm {
            weight: &self.weight,
            bias: &self.bias,
            eps: self.eps as f32,
        }
    }
}

/// In inference the weights are detached so the forward pass records no autograd graph (which
/// would keep every activation of the batch alive until the output is dropped).
fn weights_for(mode: Mode, w: &Tensor, b: &Tensor) -> (Tensor, Tensor) {
    match mode {
        Mode::Infer => (w.detach(), b.detach()),
        Mode::Train(_) => (w.clone(), b.clone()),
    }
}

#[derive(Debug, Clone)]
struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    layer_norm: LayerNorm,
}

impl Embeddings {
    fn new(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let init = candle_nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let h = cfg.hidden_size;
        Ok(Self {
            word: vb.get_with_hints((cfg.vocab_size, h), "word_embeddings.weight", init)?,
            position: vb.get_with_hints(
                (cfg.max_position_embeddings, h),
                "position_embeddings.weight",
                init,
            )?,
            token_type: vb.get_with_hints(
                (cfg.type_vocab_size, h),
                "token_type_embeddings.weight",
                init,
            )?,
            layer_norm: LayerNorm::new(vb.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
        })
    }

    /// `token_types` (`[batch, len]` u32) selects each token's segment embedding; without it every
    /// token is segment 0 (single sentences).
    fn forward(
        &self,
        input_ids: &Tensor,
        token_types: Option<&Tensor>,
        mode: Mode,
    ) -> Result<Tensor> {
        let (batch, len) = input_ids.dims2()?;
        let pick = |t: &Tensor| {
            if mode == Mode::Infer {
                t.detach()
            } else {
                t.clone()
            }
        };
        let words = pick(&self.word).embedding(&input_ids.flatten_all()?)?;
        let hidden = words.dim(1)?;
        let words = words.reshape((batch, len, hidden))?;
        // Positions 0..len and token type 0 are the same for every row: add them once, broadcast.
        let positions = pick(&self.position).narrow(0, 0, len)?;
        let x = match token_types {
            None => {
                let token_type = pick(&self.token_type).narrow(0, 0, 1)?;
                words.broadcast_add(&positions.broadcast_add(&token_type)?)?
            }
            Some(types) => {
                let segments = pick(&self.token_type)
                    .embedding(&types.flatten_all()?)?
                    .reshape((batch, len, hidden))?;
                (words + segments)?.broadcast_add(&positions)?
            }
        };
        mode.drop(self.layer_norm.forward(&x, mode)?, Site::Embeddings)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
    heads: usize,
    activation: Activation,
    /// Its place in the stack (each layer draws its own dropout masks).
    index: usize,
}

impl Layer {
    fn new(vb: VarBuilder, cfg: &BertConfig, index: usize) -> Result<Self> {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let attn = vb.pp("attention");
        Ok(Self {
            query: Linear::new(attn.pp("self").pp("query"), h, h)?,
            key: Linear::new(attn.pp("self").pp("key"), h, h)?,
            value: Linear::new(attn.pp("self").pp("value"), h, h)?,
            attn_out: Linear::new(attn.pp("output").pp("dense"), h, h)?,
            attn_norm: LayerNorm::new(attn.pp("output").pp("LayerNorm"), h, eps)?,
            intermediate: Linear::new(vb.pp("intermediate").pp("dense"), h, i)?,
            output: Linear::new(vb.pp("output").pp("dense"), i, h)?,
            out_norm: LayerNorm::new(vb.pp("output").pp("LayerNorm"), h, eps)?,
            heads: cfg.num_attention_heads,
            activation: cfg.hidden_act,
            index,
        })
    }

    fn forward(&self, x: &Tensor, padding: &Padding, mode: Mode) -> Result<Tensor> {
        let context = match (&padding.lens, mode) {
            (Some(lens), Mode::Train(dropout)) => self.fused_attention(x, lens, dropout)?,
            _ => self.attention(x, &padding.mask_bias, mode)?,
        };
        self.after_attention(&context, x, mode)
    }

    /// [`Self::forward`] for the first token of each row only (`[batch, 1, hidden]` out): every
    /// token's keys and values, the first token's query, and the rest of the layer on that row
    /// alone. The last layer of a model that reads only `[CLS]`.
    fn forward_first(&self, x: &Tensor, padding: &Padding, mode: Mode) -> Result<Tensor> {
        let (batch, len, hidden) = x.dims3()?;
        let head_dim = hidden / self.heads;
        let split_heads = |t: Tensor, len: usize| -> Result<Tensor> {
            t.reshape((batch, len, self.heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let first = x.narrow(1, 0, 1)?;
        let q = split_heads(self.query.forward(&first, mode)?, 1)?;
        let k = split_heads(self.key.forward(x, mode)?, len)?;
        let v = split_heads(self.value.forward(x, mode)?, len)?;
        let context = self.attend(&q, &k, &v, &padding.mask_bias, mode)?;
        let context = context.transpose(1, 2)?.reshape((batch, 1, hidden))?;
        self.after_attention(&context, &first, mode)
    }

    /// Scaled dot-product attention of `q` (`[batch, heads, queries, head_dim]`) over `k` and `v`
    /// (`[batch, heads, keys, head_dim]`) with the additive `[batch, 1, 1, keys]` padding bias.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask_bias: &Tensor,
        mode: Mode,
    ) -> Result<Tensor> {
        let scale = 1.0 / (q.dim(3)? as f64).sqrt();
        use super::precision::matmul;
        let probs = match mode {
            Mode::Infer => candle_nn::ops::softmax_last_dim(
                &(matmul(q, &k.t()?)? * scale)?.broadcast_add(mask_bias)?,
            )?,
            Mode::Train(dropout) => {
                let probs =
                    super::train_ops::masked_softmax(&matmul(q, &k.t()?)?, mask_bias, scale)?;
                match dropout.filter(|d| d.rates.attention > 0.0) {
                    Some(d) => {
                        let dims = probs.dims4()?;
                        let mask =
                            d.attention_mask(self.index, dims, probs.dtype(), probs.device())?;
                        (probs * mask)?
                    }
                    None => probs,
                }
            }
        };
        matmul(&probs, v)
    }

    /// The attention output projection, residual and norm, then the feed-forward block.
    fn after_attention(&self, context: &Tensor, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let attended = mode.drop(
            self.attn_out.forward(context, mode)?,
            Site::AttentionOutput(self.index),
        )?;
        let x = self.attn_norm.forward(&(attended + x)?, mode)?;
        let inner = self.intermediate.forward(&x, mode)?;
        let inner = match self.activation {
            Activation::Gelu => super::train_ops::gelu(&inner)?,
            Activation::GeluNew => inner.gelu()?,
            Activation::Relu => inner.relu()?,
        };
        let out = mode.drop(self.output.forward(&inner, mode)?, Site::Output(self.index))?;
        self.out_norm.forward(&(out + x)?, mode)
    }
}

impl Layer {
    /// Self-attention composed from tensor ops; `mask_bias` is `[batch, 1, 1, len]`: 0 for real
    /// tokens, a large negative for padding.
    fn attention(&self, x: &Tensor, mask_bias: &Tensor, mode: Mode) -> Result<Tensor> {
        let (batch, len, hidden) = x.dims3()?;
        let head_dim = hidden / self.heads;
        let split_heads = |t: Tensor| -> Result<Tensor> {
            t.reshape((batch, len, self.heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split_heads(self.query.forward(x, mode)?)?;
        let k = split_heads(self.key.forward(x, mode)?)?;
        let v = split_heads(self.value.forward(x, mode)?)?;
        self.attend(&q, &k, &v, mask_bias, mode)?
            .transpose(1, 2)?
            .reshape((batch, len, hidden))
    }

    /// Differentiable self-attention through one q/k/v projection and the fused kernel of
    /// [`super::train_attention`] (right-padded rows of `lens` real tokens), with `dropout`'s
    /// attention masks.
    fn fused_attention(
        &self,
        x: &Tensor,
        lens: &[usize],
        dropout: Option<Dropout>,
    ) -> Result<Tensor> {
        let w = Tensor::cat(
            &[&self.query.weight, &self.key.weight, &self.value.weight],
            0,
        )?;
        let b = Tensor::cat(&[&self.query.bias, &self.key.bias, &self.value.bias], 0)?;
        let dropout = dropout
            .filter(|d| d.rates.attention > 0.0)
            .map(|d| (d, self.index));
        super::train_attention::self_attention(&linear(x, &w, &b)?, lens, self.heads, dropout)
    }

    /// Inference over packed sequences (`x`: `[total_tokens, hidden]`), see [`BertModel::forward_packed`].
    /// With `first` (the row of each sequence's first token in `x`), only those rows come out:
    /// keys and values for every token, everything else for one row per sequence.
    fn forward_packed(
        &self,
        x: &Tensor,
        seq_lens: &[usize],
        first: Option<&Tensor>,
    ) -> Result<Tensor> {
        use super::fused;
        let d = |t: &Tensor| t.detach();
        let (context, x) = match first {
            // One projection for q, k and v: a single large matrix product instead of three.
            None => {
                let w = Tensor::cat(
                    &[&self.query.weight, &self.key.weight, &self.value.weight],
                    0,
                )?
                .detach();
                let b =
                    Tensor::cat(&[&self.query.bias, &self.key.bias, &self.value.bias], 0)?.detach();
                let qkv = fused::linear(x, &w, &b)?;
                let context = super::attention::packed_attention(&qkv, seq_lens, self.heads)?;
                (context, x.clone())
            }
            Some(first) => {
                let w = Tensor::cat(&[&self.key.weight, &self.value.weight], 0)?.detach();
                let b = Tensor::cat(&[&self.key.bias, &self.value.bias], 0)?.detach();
                let kv = fused::linear(x, &w, &b)?;
                let x = x.index_select(first, 0)?;
                let q = fused::linear(&x, &d(&self.query.weight), &d(&self.query.bias))?;
                let context =
                    super::attention::first_token_attention(&q, &kv, seq_lens, self.heads)?;
                (context, x)
            }
        };
        let x = fused::linear_residual_norm(
            &context,
            &d(&self.attn_out.weight),
            &d(&self.attn_out.bias),
            &x,
            &self.attn_norm.fused(),
        )?;
        let (wi, bi) = (d(&self.intermediate.weight), d(&self.intermediate.bias));
        let inner = match self.activation {
            Activation::Gelu => fused::linear_gelu(&x, &wi, &bi)?,
            Activation::GeluNew => self.intermediate.forward(&x, Mode::Infer)?.gelu()?,
            Activation::Relu => self.intermediate.forward(&x, Mode::Infer)?.relu()?,
        };
        fused::linear_residual_norm(
            &inner,
            &d(&self.output.weight),
            &d(&self.output.bias),
            &x,
            &self.out_norm.fused(),
        )
    }
}

/// The BERT encoder stack (embeddings + transformer layers), without the pooler head.
#[derive(Debug, Clone)]
pub struct BertModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pub config: BertConfig,
}

impl BertModel {
    /// Builds the model from `vb`, whose names must be rooted where the checkpoint's `embeddings.`
    /// and `encoder.` live (use `vb.pp("bert")` for checkpoints that carry that prefix).
    pub fn new(vb: VarBuilder, config: &BertConfig) -> Result<Self> {
        let embeddings = Embeddings::new(vb.pp("embeddings"), config)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::new(vb.pp(format!("encoder.layer.{i}")), config, i))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings,
            layers,
            config: config.clone(),
        })
    }

    /// Token embeddings `[batch, len, hidden]` for `input_ids` and `attention_mask` (`[batch, len]`,
    /// u32, 1 for real tokens).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        mode: Mode,
    ) -> Result<Tensor> {
        self.forward_typed(input_ids, None, attention_mask, mode)
    }

    /// As [`Self::forward`], with each token's segment (`token_type_ids`, `[batch, len]` u32) for
    /// sentence pairs.
    pub fn forward_typed(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: &Tensor,
        mode: Mode,
    ) -> Result<Tensor> {
        self.padded(input_ids, token_type_ids, attention_mask, mode, false)
    }

    /// As [`Self::forward_typed`], but only each row's first token (`[CLS]`) comes out,
    /// `[batch, hidden]`: the last layer computes the other tokens' keys and values and nothing
    /// else for them (nor, in training, their gradients). What a cross-encoder reads.
    pub fn forward_typed_first(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: &Tensor,
        mode: Mode,
    ) -> Result<Tensor> {
        self.padded(input_ids, token_type_ids, attention_mask, mode, true)?
            .squeeze(1)
    }

    fn padded(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: &Tensor,
        mode: Mode,
        first_only: bool,
    ) -> Result<Tensor> {
        let (_, len) = input_ids.dims2()?;
        if len > self.config.max_position_embeddings {
            candle_core::bail!(
                "sequence of {len} tokens is longer than the model's {} positions",
                self.config.max_position_embeddings
            );
        }
        let dtype = self.embeddings.word.dtype();
        let lens = if mode.is_train() && super::train_attention::supported(&self.embeddings.word) {
            super::train_attention::right_padded_lengths(attention_mask)?
        } else {
            None
        };
        let padding = Padding {
            mask_bias: attention_bias(attention_mask, dtype)?,
            lens,
        };
        let mut x = self.embeddings.forward(input_ids, token_type_ids, mode)?;
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            x = if first_only && i == last {
                layer.forward_first(&x, &padding, mode)?
            } else {
                layer.forward(&x, &padding, mode)?
            };
        }
        if first_only && self.layers.is_empty() {
            x = x.narrow(1, 0, 1)?;
        }
        Ok(x)
    }

    /// Inference without padding: `ids` holds several sequences end to end (`seq_lens` says how
    /// long each is) and the result is their token embeddings `[total_tokens, hidden]`. Row-wise
    /// work (projections, feed-forward, layer norms) runs on real tokens only, and attention is
    /// the fused per-sequence kernel of [`super::attention`]. CPU and f32 only
    /// ([`Self::supports_packed`]); same function as [`Self::forward`] in [`Mode::Infer`].
    pub fn forward_packed(&self, ids: &Tensor, seq_lens: &[usize]) -> Result<Tensor> {
        self.forward_packed_typed(ids, None, seq_lens)
    }

    /// As [`Self::forward_packed`], with each token's segment (`types`, `[total_tokens]` u32).
    pub fn forward_packed_typed(
        &self,
        ids: &Tensor,
        types: Option<&Tensor>,
        seq_lens: &[usize],
    ) -> Result<Tensor> {
        self.packed(ids, types, seq_lens, false)
    }

    /// As [`Self::forward_packed_typed`], but only each sequence's first token (`[CLS]`) comes
    /// out, `[sequences, hidden]`: the last layer computes the other tokens' keys and values and
    /// nothing else for them (a six-layer cross-encoder scores pairs about 20 % faster). What a
    /// cross-encoder or CLS pooling reads; the same values as the full pass's first rows.
    pub fn forward_packed_first(
        &self,
        ids: &Tensor,
        types: Option<&Tensor>,
        seq_lens: &[usize],
    ) -> Result<Tensor> {
        self.packed(ids, types, seq_lens, true)
    }

    fn packed(
        &self,
        ids: &Tensor,
        types: Option<&Tensor>,
        seq_lens: &[usize],
        first_only: bool,
    ) -> Result<Tensor> {
        let longest = seq_lens.iter().copied().max().unwrap_or(0);
        if longest > self.config.max_position_embeddings {
            candle_core::bail!(
                "sequence of {longest} tokens is longer than the model's {} positions",
                self.config.max_position_embeddings
            );
        }
        let positions: Vec<u32> = seq_lens.iter().flat_map(|&len| 0..len as u32).collect();
        let positions = Tensor::from_vec(positions, ids.dims1()?, ids.device())?;
        let e = &self.embeddings;
        let x = e
            .word
            .detach()
            .embedding(ids)?
            .add(&e.position.detach().embedding(&positions)?)?;
        let x = match types {
            None => x.broadcast_add(&e.token_type.detach().narrow(0, 0, 1)?)?,
            Some(types) => x.add(&e.token_type.detach().embedding(types)?)?,
        };
        let mut x = super::fused::layer_norm(&x, &e.layer_norm.fused())?;
        let first = if first_only {
            let starts = super::attention::sequence_starts(seq_lens);
            let starts: Vec<u32> = starts.into_iter().map(|s| s as u32).collect();
            Some(Tensor::new(starts, ids.device())?)
        } else {
            None
        };
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward_packed(&x, seq_lens, first.as_ref().filter(|_| i == last))?;
        }
        match &first {
            Some(first) if self.layers.is_empty() => x.index_select(first, 0),
            _ => Ok(x),
        }
    }

    /// Whether [`Self::forward_packed`] runs here (its fused attention is CPU f32 code, and
    /// [`super::kernels`] may ask for the composed path instead).
    pub fn supports_packed(&self) -> bool {
        super::kernels::applies_to(self.device(), self.dtype(), &[DType::F32])
    }

    pub fn dtype(&self) -> DType {
        self.embeddings.word.dtype()
    }

    pub fn device(&self) -> &Device {
        self.embeddings.word.device()
    }
}

/// Where a batch's padding is, in the two forms the attention paths need.
struct Padding {
    /// Additive `[batch, 1, 1, len]` bias for the composed attention.
    mask_bias: Tensor,
    /// Real tokens per row, when every row is right-padded and the fused training kernel runs.
    lens: Option<Vec<usize>>,
}

/// `[batch, len]` 0/1 mask → additive `[batch, 1, 1, len]` bias: padded keys get a large negative
/// so that softmax gives them exactly zero weight.
fn attention_bias(mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let (batch, len) = mask.dims2()?;
    let keep = mask.to_dtype(dtype)?;
    ((keep - 1.0)? * 1e9)?.reshape((batch, 1, 1, len))
}

impl Module for BertModel {
    /// Unpadded single-sequence convenience: every token attends to every other.
    fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let mask = input_ids.ones_like()?;
        BertModel::forward(self, input_ids, &mask, Mode::Infer)
    }
}
