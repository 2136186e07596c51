//! Dropout for training the BERT family, where Hugging Face's BERT (and so sentence-transformers'
//! trainers, which train in `model.train()` mode) put it: after the embeddings' layer norm, on the
//! attention probabilities, after each attention output and feed-forward output projection (before
//! the residual add), and on a classification head's pooled input.
//!
//! Masks come from a counter-based hash, not a stateful generator: whether element `e` of site `s`
//! in row `r` is kept is a pure function of (seed, `s`, `r`, `e`). So
//! - the CPU kernels (fused attention, and one pass per hidden-state site) redraw in their backward
//!   pass exactly the mask their forward pass used, without storing it, and the composed path
//!   (CUDA's) builds the same mask as a tensor;
//! - a pass over a slice of a batch (gradient caching, the `[CLS]`-only last layer) draws the same
//!   values as the pass over the whole batch, since rows and token positions are absolute;
//! - a resumed run, seeded from (run seed, step, first row), drops the same units.
//!
//! Kept elements are scaled by `1 / (1 − p)` (inverted dropout), as PyTorch's `nn.Dropout`.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::train_ops::{by_dtype, cast, contiguous, uses_kernels, Real};

/// Rates of one model's dropout sites.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DropoutRates {
    /// After the embeddings and the attention / feed-forward output projections
    /// (`hidden_dropout_prob`).
    pub hidden: f32,
    /// On the attention probabilities (`attention_probs_dropout_prob`).
    pub attention: f32,
    /// On a classification head's input (`classifier_dropout`, else `hidden_dropout_prob`).
    pub classifier: f32,
}

impl DropoutRates {
    /// The same rate at every site (`0` turns dropout off).
    pub fn uniform(p: f64) -> Self {
        let p = p as f32;
        Self {
            hidden: p,
            attention: p,
            classifier: p,
        }
    }

    pub fn is_off(&self) -> bool {
        self.hidden == 0.0 && self.attention == 0.0 && self.classifier == 0.0
    }

    /// These rates drawn with `seed`, for a pass whose first row is row `first_row` of the batch.
    pub fn draw(self, seed: u64, first_row: usize) -> Option<Dropout> {
        (!self.is_off()).then_some(Dropout {
            rates: self,
            seed,
            first_row,
        })
    }

    /// Rejects a rate outside `[0, 1)`.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, p) in [
            ("hidden", self.hidden),
            ("attention", self.attention),
            ("classifier", self.classifier),
        ] {
            if !(0.0..1.0).contains(&p) {
                anyhow::bail!("{name} dropout must be in [0, 1), got {p}");
            }
        }
        Ok(())
    }
}

/// One forward pass's dropout: the rates, the seed its masks are drawn from, and which row of the
/// whole batch this pass's first row is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    pub rates: DropoutRates,
    pub seed: u64,
    pub first_row: usize,
}

/// Where in the network a mask applies; each site draws independent masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    Embeddings,
    /// The attention probabilities of a layer.
    Attention(usize),
    /// After a layer's attention output projection.
    AttentionOutput(usize),
    /// After a layer's feed-forward output projection.
    Output(usize),
    /// A classification head's input.
    Classifier,
}

impl Site {
    fn key(self) -> u64 {
        match self {
            Site::Embeddings => 1,
            Site::Attention(l) => 2 + 4 * l as u64,
            Site::AttentionOutput(l) => 3 + 4 * l as u64,
            Site::Output(l) => 4 + 4 * l as u64,
            Site::Classifier => u64::MAX,
        }
    }
}

/// SplitMix64's finaliser: a bijective mix of all 64 bits.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The masks of one (site, row). One 64-bit hash decides four neighbouring elements (keys
/// `4k..4k+4`, a 16-bit draw each): element `e` is kept when its draw is at least `p · 2¹⁶`.
#[derive(Debug, Clone, Copy)]
pub struct RowMask {
    stream: u64,
    threshold: u64,
    /// `1 / (1 − p)`.
    pub scale: f32,
}

impl RowMask {
    #[inline(always)]
    fn draws(&self, group: u64) -> u64 {
        mix(self.stream ^ group.wrapping_mul(0xD6E8_FEB8_6659_FD93))
    }

    /// The factor element `e` (a position key, see [`hidden_key`] and [`attention_key`]) is
    /// multiplied by: 0 or `1 / (1 − p)`.
    pub fn factor(&self, e: u64) -> f32 {
        let mut out = 0.0;
        self.factors(e, 1, |_, f| out = f);
        out
    }

    /// The factors of keys `e0..e0 + out.len()` into `out`: [`Self::factors`] without a call per
    /// element, four at a time from one hash when `e0` starts a group (every row of a mask does).
    #[inline]
    pub fn fill(&self, e0: u64, out: &mut [f32]) {
        if e0 & 3 != 0 {
            return self.factors(e0, out.len(), |n, f| out[n] = f);
        }
        let done = out.len() - out.len() % 4;
        let mut groups = out.chunks_exact_mut(4);
        for (g, four) in (&mut groups).enumerate() {
            let draws = self.draws((e0 >> 2) + g as u64);
            for (k, f) in four.iter_mut().enumerate() {
                let kept = (draws >> (16 * k)) & 0xFFFF >= self.threshold;
                *f = if kept { self.scale } else { 0.0 };
            }
        }
        let rest = groups.into_remainder();
        self.factors(e0 + done as u64, rest.len(), |n, f| rest[n] = f);
    }

    /// `f(n, factor of key e0 + n)` for `n` in `0..count`: [`Self::factor`] over a run of keys,
    /// hashing once per four.
    #[inline(always)]
    pub fn factors(&self, e0: u64, count: usize, mut f: impl FnMut(usize, f32)) {
        let mut draws = self.draws(e0 >> 2) >> (16 * (e0 & 3));
        for n in 0..count {
            let e = e0 + n as u64;
            if n > 0 && e & 3 == 0 {
                draws = self.draws(e >> 2);
            }
            f(
                n,
                if draws & 0xFFFF >= self.threshold {
                    self.scale
                } else {
                    0.0
                },
            );
            draws >>= 16;
        }
    }
}

/// The key of channel `c` of token `t` at a hidden-state site.
#[inline(always)]
pub fn hidden_key(t: usize, c: usize) -> u64 {
    ((t as u64) << 24) | c as u64
}

/// The key of head `h`'s probability of query `i` attending to key `j`.
#[inline(always)]
pub fn attention_key(h: usize, i: usize, j: usize) -> u64 {
    ((h as u64) << 40) | ((i as u64) << 20) | j as u64
}

impl Dropout {
    /// The rate at `site`.
    pub fn rate(&self, site: Site) -> f32 {
        match site {
            Site::Attention(_) => self.rates.attention,
            Site::Classifier => self.rates.classifier,
            _ => self.rates.hidden,
        }
    }

    /// The mask of `site` in row `row` of this pass (its row in the whole batch is
    /// `first_row + row`).
    pub fn row(&self, site: Site, row: usize) -> RowMask {
        let p = self.rate(site) as f64;
        let stream = mix(mix(self.seed ^ mix(site.key())) ^ (self.first_row + row) as u64);
        RowMask {
            stream,
            threshold: (p * 65_536.0).round() as u64,
            scale: (1.0 / (1.0 - p)) as f32,
        }
    }

    /// `x` (`[rows, tokens, channels]`, or `[rows, channels]` for one token per row) with the
    /// mask of `site` applied; token `t` of the tensor is token `t` of the sequence (pass only
    /// first tokens as a `[rows, 1, channels]` slice or `[rows, channels]`).
    pub fn apply(&self, x: &Tensor, site: Site) -> Result<Tensor> {
        if self.rate(site) == 0.0 || x.elem_count() == 0 {
            return Ok(x.clone());
        }
        let (rows, tokens, channels) = match x.dims() {
            &[r, t, c] => (r, t, c),
            &[r, c] => (r, 1, c),
            d => candle_core::bail!("dropout: unexpected shape {d:?}"),
        };
        if uses_kernels(x) {
            return x.contiguous()?.apply_op1(HiddenDropout {
                dropout: *self,
                site,
                row_len: tokens * channels,
                channels,
            });
        }
        let mut mask = vec![0f32; rows * tokens * channels];
        mask.par_chunks_mut(tokens * channels)
            .enumerate()
            .for_each(|(r, row)| {
                let m = self.row(site, r);
                for (t, token) in row.chunks_exact_mut(channels).enumerate() {
                    m.fill(hidden_key(t, 0), token);
                }
            });
        x * to_tensor(mask, x.dims(), x.dtype(), x.device())?
    }

    /// The attention-probability mask `[rows, heads, queries, keys]` of `layer` as factors
    /// (0 or `1 / (1 − p)`), query `i` being token `i` of the sequence. Built on the host (in
    /// parallel) for the composed path; the CPU kernel draws the same factors in place.
    pub fn attention_mask(
        &self,
        layer: usize,
        (rows, heads, queries, keys): (usize, usize, usize, usize),
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let mut mask = vec![0f32; rows * heads * queries * keys];
        if mask.is_empty() {
            return Tensor::zeros((rows, heads, queries, keys), dtype, device);
        }
        mask.par_chunks_mut(queries * keys)
            .enumerate()
            .for_each(|(n, head)| {
                let (r, h) = (n / heads, n % heads);
                let m = self.row(Site::Attention(layer), r);
                for (i, query) in head.chunks_exact_mut(keys).enumerate() {
                    m.fill(attention_key(h, i, 0), query);
                }
            });
        to_tensor(mask, &[rows, heads, queries, keys], dtype, device)
    }
}

/// A hidden-state site's dropout as one CPU pass forward and one backward: the backward pass
/// redraws the factors from the hash (dropout is its own adjoint), so the graph holds no mask and
/// candle's product rule does not compute the unused gradient of one.
#[derive(Clone, Copy)]
struct HiddenDropout {
    dropout: Dropout,
    site: Site,
    /// Elements of one row (`tokens · channels`).
    row_len: usize,
    channels: usize,
}

impl HiddenDropout {
    fn run<T: Real>(&self, x: &[T]) -> Vec<T> {
        let mut out = vec![T::zero(); x.len()];
        out.par_chunks_mut(self.row_len)
            .zip(x.par_chunks(self.row_len))
            .enumerate()
            .for_each(|(r, (out, x))| {
                let m = self.dropout.row(self.site, r);
                // The factors as the mask tensor holds them: f32, then the data's type.
                let mut factors = vec![0f32; self.channels];
                let tokens = out
                    .chunks_exact_mut(self.channels)
                    .zip(x.chunks_exact(self.channels));
                let (kept, dropped) = (cast::<T>(m.scale as f64), T::zero());
                for (t, (out, x)) in tokens.enumerate() {
                    m.fill(hidden_key(t, 0), &mut factors);
                    for ((o, &x), &f) in out.iter_mut().zip(x).zip(&factors) {
                        *o = x * if f != 0.0 { kept } else { dropped };
                    }
                }
            });
        out
    }
}

impl CustomOp1 for HiddenDropout {
    fn name(&self) -> &'static str {
        "hidden-dropout"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(storage, self.name(), T => {
            let x = contiguous::<T>(storage, layout, self.name())?;
            Ok((WithDType::to_cpu_storage_owned(self.run(x)), layout.shape().clone()))
        })
    }

    fn bwd(&self, _x: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(*self)?))
    }
}

fn to_tensor(mask: Vec<f32>, dims: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
    Tensor::from_vec(mask, dims, device)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(p: f64, seed: u64) -> Dropout {
        DropoutRates::uniform(p).draw(seed, 0).unwrap()
    }

    #[test]
    fn drops_the_rate_and_scales_the_rest() {
        let d = draw(0.1, 7);
        let x = Tensor::ones((8, 64, 96), DType::F32, &Device::Cpu).unwrap();
        let y: Vec<f32> = d
            .apply(&x, Site::Output(2))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64 / y.len() as f64;
        // 49,152 draws: the standard error of the share is 0.0014.
        assert!((dropped - 0.1).abs() < 0.006, "dropped {dropped}");
        let kept = y.iter().find(|&&v| v != 0.0).unwrap();
        assert!((kept - 1.0 / 0.9).abs() < 1e-6);
        // The mean is preserved in expectation.
        let mean = y.iter().sum::<f32>() as f64 / y.len() as f64;
        assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn masks_depend_on_seed_site_and_absolute_row() {
        let x = Tensor::ones((4, 3, 16), DType::F32, &Device::Cpu).unwrap();
        let a = draw(0.5, 1).apply(&x, Site::Output(0)).unwrap();
        let same = draw(0.5, 1).apply(&x, Site::Output(0)).unwrap();
        let other_seed = draw(0.5, 2).apply(&x, Site::Output(0)).unwrap();
        let other_site = draw(0.5, 1).apply(&x, Site::Output(1)).unwrap();
        let to_vec = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(to_vec(&a), to_vec(&same));
        assert_ne!(to_vec(&a), to_vec(&other_seed));
        assert_ne!(to_vec(&a), to_vec(&other_site));
        // Rows 2..4 drawn as a pass of their own that starts at row 2: the same masks.
        let tail = DropoutRates::uniform(0.5)
            .draw(1, 2)
            .unwrap()
            .apply(&x.narrow(0, 2, 2).unwrap(), Site::Output(0))
            .unwrap();
        assert_eq!(to_vec(&a.narrow(0, 2, 2).unwrap()), to_vec(&tail));
        // The first token alone, as `[rows, channels]`: the full pass's first tokens.
        let first = draw(0.5, 1)
            .apply(
                &x.narrow(1, 0, 1).unwrap().squeeze(1).unwrap(),
                Site::Output(0),
            )
            .unwrap();
        assert_eq!(
            to_vec(&a.narrow(1, 0, 1).unwrap()),
            to_vec(&first),
            "first-token rows"
        );
    }

    #[test]
    fn the_cpu_pass_equals_the_mask_tensor_forward_and_backward() {
        use crate::models::kernels::{with, Kernels};
        use candle_core::Var;
        let d = draw(0.25, 9);
        for dtype in [DType::F32, DType::F64] {
            let x = Var::from_tensor(
                &Tensor::randn(0f32, 1., (3, 5, 24), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let weights = Tensor::randn(0f32, 1., (3, 5, 24), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let run = |kernels| {
                with(kernels, || {
                    let y = d.apply(x.as_tensor(), Site::AttentionOutput(1)).unwrap();
                    let grads = (&y * &weights)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap();
                    let to_vec = |t: &Tensor| {
                        t.flatten_all()
                            .unwrap()
                            .to_dtype(DType::F64)
                            .unwrap()
                            .to_vec1::<f64>()
                            .unwrap()
                    };
                    (to_vec(&y), to_vec(grads.get(x.as_tensor()).unwrap()))
                })
            };
            let (native, portable) = (run(Kernels::Native), run(Kernels::Portable));
            assert_eq!(native, portable, "{dtype:?}");
            assert!(native.1.contains(&0.0), "some units dropped");
        }
    }

    #[test]
    fn runs_of_keys_draw_what_single_keys_draw() {
        let m = draw(0.3, 4).row(Site::Attention(1), 2);
        for start in [0u64, 1, 2, 3, 4, attention_key(5, 7, 3)] {
            let mut run = vec![];
            m.factors(start, 11, |n, f| run.push((n, f)));
            let single: Vec<(usize, f32)> =
                (0..11).map(|n| (n, m.factor(start + n as u64))).collect();
            assert_eq!(run, single, "from key {start}");
            let mut filled = vec![-1f32; 11];
            m.fill(start, &mut filled);
            assert_eq!(
                filled,
                single.iter().map(|s| s.1).collect::<Vec<_>>(),
                "filled from key {start}"
            );
        }
    }

    #[test]
    fn zero_rates_draw_nothing_and_bad_rates_are_refused() {
        assert!(DropoutRates::uniform(0.0).draw(1, 0).is_none());
        assert!(DropoutRates::uniform(1.0).validate().is_err());
        assert!(DropoutRates::uniform(-0.1).validate().is_err());
        assert!(DropoutRates::uniform(0.1).validate().is_ok());
    }
}
