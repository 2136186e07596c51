//! One batch's loss and parameter gradients, computed one of two ways:
//!
//! - **direct**: every text column is embedded with gradients, the loss is back-propagated.
//! - **GradCache** (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
//!   Limited Setup"), when a mini-batch size is given: (1) embed everything without a graph, in
//!   mini-batches; (2) compute the loss on those embeddings as leaves and take its gradient with
//!   respect to each embedding; (3) re-embed each mini-batch with a graph and back-propagate
//!   `Σ embedding · its cached gradient`, summing parameter gradients. The result equals the
//!   direct one (same loss, same gradients) while only one mini-batch's activations are alive at a
//!   time, so the batch — and with it the number of in-batch negatives — is no longer bounded by
//!   memory.

use anyhow::{Context, Result};
use candle_core::{Tensor, Var};

use super::losses::Loss;
use crate::models::SentenceEncoder;
use crate::train::dataset::Batch;
use crate::train::optim::{Grads, Params};
use crate::train::task::BatchDropout;

/// The loss value and the gradient of every parameter for one batch, with `dropout`'s masks
/// (text column `c` draws stream `c`; both ways draw the same).
pub fn loss_and_grads(
    encoder: &SentenceEncoder,
    params: &Params,
    loss: &dyn Loss,
    batch: &Batch,
    mini_batch: Option<usize>,
    dropout: BatchDropout,
) -> Result<(f64, Grads)> {
    match mini_batch {
        None => direct(encoder, params, loss, batch, dropout),
        Some(size) => cached(encoder, params, loss, batch, size.max(1), dropout),
    }
}

fn direct(
    encoder: &SentenceEncoder,
    params: &Params,
    loss: &dyn Loss,
    batch: &Batch,
    dropout: BatchDropout,
) -> Result<(f64, Grads)> {
    let embeddings: Vec<Tensor> = batch
        .texts
        .iter()
        .enumerate()
        .map(|(c, column)| encoder.embed_texts(column, dropout.mode(c, 0)))
        .collect::<Result<_>>()?;
    let value = loss.compute(&embeddings, batch)?;
    let grads = crate::models::precision::scale_loss(&value)?
        .backward()
        .context("back-propagating the loss")?;
    Ok((scalar(&value)?, Grads::from_store(params, &grads)))
}

fn cached(
    encoder: &SentenceEncoder,
    params: &Params,
    loss: &dyn Loss,
    batch: &Batch,
    size: usize,
    dropout: BatchDropout,
) -> Result<(f64, Grads)> {
    let rows = batch.len();
    let chunks: Vec<(usize, usize)> = (0..rows)
        .step_by(size)
        .map(|s| (s, size.min(rows - s)))
        .collect();
    // (1) Embeddings without a graph, as leaves the loss can be differentiated against; with
    // dropout, through the training pass with the masks step (3) draws again.
    let leaves: Vec<Var> = batch
        .texts
        .iter()
        .enumerate()
        .map(|(c, column)| {
            let parts: Vec<Tensor> = chunks
                .iter()
                .map(|&(s, n)| {
                    let mode = dropout.graph_free_mode(c, s);
                    Ok(encoder.embed_texts(&column[s..s + n], mode)?.detach())
                })
                .collect::<Result<_>>()?;
            Ok(Var::from_tensor(&Tensor::cat(&parts, 0)?)?)
        })
        .collect::<Result<_>>()?;
    // (2) The loss and its gradient with respect to every embedding.
    let embeddings: Vec<Tensor> = leaves.iter().map(|v| v.as_tensor().clone()).collect();
    let value = loss.compute(&embeddings, batch)?;
    let store = crate::models::precision::scale_loss(&value)?
        .backward()
        .context("back-propagating the loss onto the cached embeddings")?;
    let cached: Vec<Tensor> = leaves
        .iter()
        .map(|v| match store.get(v.as_tensor()) {
            Some(g) => Ok(g.detach()),
            None => Ok(v.as_tensor().zeros_like()?),
        })
        .collect::<Result<_>>()?;
    // (3) Re-embed each mini-batch with a graph and push its cached gradient through.
    let mut total = Grads(vec![None; params.len()]);
    for (c, (column, grad)) in batch.texts.iter().zip(&cached).enumerate() {
        for &(s, n) in &chunks {
            let emb = encoder.embed_texts(&column[s..s + n], dropout.mode(c, s))?;
            let surrogate = (emb * grad.narrow(0, s, n)?)?.sum_all()?;
            total.accumulate(Grads::from_store(params, &surrogate.backward()?))?;
        }
    }
    Ok((scalar(&value)?, total))
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?)
}
