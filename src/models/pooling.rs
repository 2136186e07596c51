//! Turning token embeddings into one sentence embedding, as sentence-transformers' `Pooling` and
//! `Normalize` modules do.

use candle_core::{DType, Result, Tensor, D};
use serde::Deserialize;

/// How token embeddings are reduced to a sentence embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean of the non-padding tokens.
    Mean,
    /// The first (`[CLS]`) token.
    Cls,
    /// Element-wise max over the non-padding tokens.
    Max,
    /// Sum of the non-padding tokens divided by the square root of their count.
    MeanSqrtLen,
}

/// `1_Pooling/config.json` as sentence-transformers writes it.
#[derive(Debug, Deserialize)]
pub struct PoolingConfig {
    #[serde(default)]
    pub pooling_mode_cls_token: bool,
    #[serde(default)]
    pub pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pub pooling_mode_max_tokens: bool,
    #[serde(default)]
    pub pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pub pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pub pooling_mode_lasttoken: bool,
}

impl PoolingConfig {
    /// The single pooling mode the config asks for. Concatenated modes are rejected rather than
    /// computed partially.
    pub fn mode(&self) -> anyhow::Result<Pooling> {
        let modes = [
            (self.pooling_mode_mean_tokens, Some(Pooling::Mean), "mean"),
            (self.pooling_mode_cls_token, Some(Pooling::Cls), "cls"),
            (self.pooling_mode_max_tokens, Some(Pooling::Max), "max"),
            (
                self.pooling_mode_mean_sqrt_len_tokens,
                Some(Pooling::MeanSqrtLen),
                "mean_sqrt_len",
            ),
            (self.pooling_mode_weightedmean_tokens, None, "weightedmean"),
            (self.pooling_mode_lasttoken, None, "lasttoken"),
        ];
        let on: Vec<_> = modes.iter().filter(|m| m.0).collect();
        match on.as_slice() {
            [(_, Some(mode), _)] => Ok(*mode),
            [(_, None, name)] => anyhow::bail!("pooling mode `{name}` is not supported yet"),
            [] => anyhow::bail!("the pooling config enables no pooling mode"),
            _ => anyhow::bail!(
                "the pooling config enables several modes ({}); only one is supported",
                on.iter().map(|m| m.2).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

impl Pooling {
    /// Pools `tokens` (`[batch, len, dim]`) under `mask` (`[batch, len]`, 1 for real tokens).
    pub fn apply(self, tokens: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let dtype = tokens.dtype();
        let mask = mask.to_dtype(dtype)?.unsqueeze(D::Minus1)?; // [batch, len, 1]
        match self {
            Pooling::Cls => tokens.narrow(1, 0, 1)?.squeeze(1),
            Pooling::Mean | Pooling::MeanSqrtLen => {
                let summed = tokens.broadcast_mul(&mask)?.sum(1)?;
                // Same floor as sentence-transformers, so an all-padding row gives zeros, not NaN.
                let count = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
                let count = if self == Pooling::MeanSqrtLen {
                    count.sqrt()?
                } else {
                    count
                };
                summed.broadcast_div(&count)
            }
            Pooling::Max => {
                let penalty = ((mask.ones_like()? - &mask)? * -1e9)?;
                tokens.broadcast_add(&penalty)?.max(1)
            }
        }
    }
}

impl Pooling {
    /// Pools packed token embeddings (`[total_tokens, dim]`, sequences end to end with lengths
    /// `seq_lens`) into `[sequences, dim]`. Mean, mean-sqrt-len and CLS are one matrix product
    /// with a `[sequences, total_tokens]` weight matrix; max reduces each sequence's rows.
    pub fn apply_packed(self, tokens: &Tensor, seq_lens: &[usize]) -> Result<Tensor> {
        let total: usize = seq_lens.iter().sum();
        if self == Pooling::Max {
            let mut start = 0;
            let mut rows = Vec::with_capacity(seq_lens.len());
            for &len in seq_lens {
                rows.push(
                    tokens
                        .narrow(0, start, len.max(1).min(total - start))?
                        .max_keepdim(0)?,
                );
                start += len;
            }
            return Tensor::cat(&rows, 0);
        }
        let mut weights = vec![0f32; seq_lens.len() * total];
        let mut start = 0;
        for (s, &len) in seq_lens.iter().enumerate() {
            let row = &mut weights[s * total + start..s * total + start + len];
            match self {
                Pooling::Cls => {
                    if let Some(first) = row.first_mut() {
                        *first = 1.0;
                    }
                }
                Pooling::Mean => row.fill(1.0 / (len as f32).max(1e-9)),
                Pooling::MeanSqrtLen => row.fill(1.0 / (len as f32).max(1e-9).sqrt()),
                Pooling::Max => unreachable!("handled above"),
            }
            start += len;
        }
        let weights = Tensor::from_vec(weights, (seq_lens.len(), total), tokens.device())?
            .to_dtype(tokens.dtype())?;
        weights.matmul(tokens)
    }
}

/// Scales each row to unit length (`torch.nn.functional.normalize` with eps 1e-12).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}

/// Cast helper used where a pooled result must leave the model as f32.
pub fn to_f32(x: &Tensor) -> Result<Tensor> {
    if x.dtype() == DType::F32 {
        Ok(x.clone())
    } else {
        x.to_dtype(DType::F32)
    }
}
