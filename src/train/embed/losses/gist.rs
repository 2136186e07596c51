//! GISTEmbedLoss (Solatorio, 2024, "GISTEmbed: Guided In-sample Selection of Training Negatives
//! for Text Embedding Fine-tuning").
//!
//! Data: `(anchor, positive[, negative])`. Like MNRL, but a frozen guide model vets the in-batch
//! negatives: any candidate the guide scores above the anchor's own positive is probably a false
//! negative and is dropped from the softmax. Candidates are the batch's positives, the other
//! anchors, the other positives seen from the positive, and the negatives; scores are cosine
//! similarities divided by `temperature`.

use anyhow::Result;
use candle_core::{DType, Tensor};

use super::{cos_sim, diagonal_cross_entropy, require_text_columns, Loss};
use crate::models::{EncodeOptions, SentenceEncoder};
use crate::train::dataset::{Batch, TrainingSet};

pub struct Gist {
    guide: SentenceEncoder,
    temperature: f64,
}

impl Gist {
    pub fn new(guide: SentenceEncoder, temperature: f64) -> Self {
        Self { guide, temperature }
    }

    fn guide_embeddings(&self, texts: &[String], like: &Tensor) -> Result<Tensor> {
        let quiet = EncodeOptions {
            progress: false,
            ..Default::default()
        };
        Ok(self
            .guide
            .encode(texts, &quiet)?
            .to_device(like.device())?
            .to_dtype(like.dtype())?)
    }
}

/// `sim` with every entry whose guide similarity beats the row's guided positive similarity
/// pushed to −∞ (except, where `keep_diagonal`, the positive itself).
pub fn mask_false_negatives(
    sim: &Tensor,
    guided: &Tensor,
    positive: &[f32],
    keep_diagonal: bool,
) -> Result<Tensor> {
    let guided: Vec<Vec<f32>> = guided.to_dtype(DType::F32)?.to_vec2()?;
    let (rows, cols) = sim.dims2()?;
    let mut bias = vec![0f64; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            if guided[i][j] > positive[i] && !(keep_diagonal && i == j) {
                bias[i * cols + j] = -1e12;
            }
        }
    }
    let bias = Tensor::from_vec(bias, (rows, cols), sim.device())?.to_dtype(sim.dtype())?;
    Ok((sim + bias)?)
}

impl Loss for Gist {
    fn name(&self) -> String {
        "GISTEmbedLoss".into()
    }

    fn check(&self, set: &TrainingSet) -> Result<()> {
        require_text_columns(set, &self.name(), 2, 3, "(anchor, positive[, negative])")
    }

    fn compute(&self, e: &[Tensor], batch: &Batch) -> Result<Tensor> {
        let g: Vec<Tensor> = batch
            .texts
            .iter()
            .map(|t| self.guide_embeddings(t, &e[0]))
            .collect::<Result<_>>()?;
        let guided_ap = cos_sim(&g[0], &g[1])?;
        let positive: Vec<f32> = guided_ap
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?
            .iter()
            .enumerate()
            .map(|(i, r)| r[i])
            .collect();
        let mut scores = vec![
            mask_false_negatives(&cos_sim(&e[0], &e[1])?, &guided_ap, &positive, true)?,
            mask_false_negatives(
                &cos_sim(&e[0], &e[0])?,
                &cos_sim(&g[0], &g[0])?,
                &positive,
                false,
            )?,
            mask_false_negatives(
                &cos_sim(&e[1], &e[1])?,
                &cos_sim(&g[1], &g[1])?,
                &positive,
                false,
            )?,
        ];
        if e.len() == 3 {
            scores.push(mask_false_negatives(
                &cos_sim(&e[0], &e[2])?,
                &cos_sim(&g[0], &g[2])?,
                &positive,
                false,
            )?);
        }
        diagonal_cross_entropy(&(Tensor::cat(&scores, 1)? / self.temperature)?)
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({"guide": self.guide.name(), "temperature": self.temperature, "margin_strategy": "absolute", "margin": 0.0})
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn guide_masks_candidates_it_prefers_to_the_positive() {
        let sim = rows(&[&[0.9, 0.8, 0.1], &[0.2, 0.7, 0.6], &[0.3, 0.1, 0.5]]);
        // Guide: row 0 rates column 1 above its own positive (0.5): masked; the diagonal is kept
        // even where something else ties it.
        let guided = rows(&[&[0.5, 0.6, 0.1], &[0.2, 0.4, 0.4], &[0.9, 0.1, 0.3]]);
        let masked: Vec<Vec<f64>> = mask_false_negatives(&sim, &guided, &[0.5, 0.4, 0.3], true)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(masked[0][0], 0.9);
        assert!(masked[0][1] < -1e11);
        assert_eq!(masked[1], vec![0.2, 0.7, 0.6], "ties are not masked");
        assert!(masked[2][0] < -1e11);
        assert_eq!(masked[2][2], 0.5);
    }
}
