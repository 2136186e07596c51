//! Linear layers of a frozen base model with optional LoRA adapters (Hu et al. 2021), as PEFT
//! builds them: `y = x·Wᵀ + b + scale · dropout(x)·Aᵀ·Bᵀ`, `A` `[r, in]` initialised as PyTorch's
//! `kaiming_uniform_(a=√5)`, `B` `[out, r]` at zero, `scale = alpha / r` (or `alpha / √r` with
//! rsLoRA). The base weight is either f32 or kept in its GGUF block format (QLoRA) and
//! dequantized on the fly, one layer at a time, in the forward pass and again for the input
//! gradient in the backward pass.
//!
//! The base is frozen, so its weight must never get a gradient: candle's matmul backward
//! computes the gradient of both operands, which for a frozen weight is a third of the layer's
//! training work thrown away (and, for a dequantized weight, keeps the f32 copy alive in the
//! graph until backward). [`frozen_matmul`] is one op whose backward yields the input gradient
//! only and holds nothing but the (possibly quantized) weight.

use std::sync::Arc;

use anyhow::{bail, Result};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Shape, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// A frozen base weight `[out, in]`: f32, or quantized blocks dequantized when used.
#[derive(Clone)]
pub enum BaseWeight {
    Dense(Tensor),
    Quantized(Arc<QTensor>),
}

impl BaseWeight {
    /// `(out, in)`.
    pub fn dims(&self) -> Result<(usize, usize)> {
        Ok(match self {
            BaseWeight::Dense(w) => w.dims2()?,
            BaseWeight::Quantized(q) => q.shape().dims2()?,
        })
    }

    /// The weight in f32 (a fresh dequantized copy for a quantized one).
    pub fn dense(&self) -> Result<Tensor> {
        Ok(match self {
            BaseWeight::Dense(w) => w.clone(),
            BaseWeight::Quantized(q) => q.dequantize(&q.device())?,
        })
    }

    /// Bytes the weight occupies in memory.
    pub fn bytes(&self) -> usize {
        match self {
            BaseWeight::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
            BaseWeight::Quantized(q) => q.storage_size_in_bytes(),
        }
    }

    /// The GGUF block format of a quantized weight.
    pub fn quantization(&self) -> Option<GgmlDType> {
        match self {
            BaseWeight::Dense(_) => None,
            BaseWeight::Quantized(q) => Some(q.dtype()),
        }
    }
}

/// `x · wᵀ` for `x` `[rows, in]` with a weight that gets no gradient: the backward pass returns
/// `grad · w` for `x` and computes nothing for `w`. On CPU the weight (dequantized if need be)
/// exists in f32 only while the product runs; elsewhere this is candle's matmul on a detached
/// weight.
pub fn frozen_matmul(x: &Tensor, w: &BaseWeight) -> Result<Tensor> {
    if super::kernels::applies(x, &[DType::F32]) {
        return Ok(x.contiguous()?.apply_op1(FrozenLinear(w.clone()))?);
    }
    Ok(super::precision::matmul(x, &w.dense()?.detach().t()?)?)
}

struct FrozenLinear(BaseWeight);

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, inner) = layout.shape().dims2()?;
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("frozen-linear takes f32");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("frozen-linear takes a contiguous input");
        };
        let x = Tensor::from_slice(&data[start..end], (rows, inner), &candle_core::Device::Cpu)?;
        let w = self.0.dense().map_err(candle_core::Error::wrap)?;
        let y = x.matmul(&w.t()?)?;
        let out = y.dim(1)?;
        Ok((
            CpuStorage::F32(y.flatten_all()?.to_vec1()?),
            Shape::from((rows, out)),
        ))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let w = self.0.dense().map_err(candle_core::Error::wrap)?;
        Ok(Some(grad_res.contiguous()?.matmul(&w)?))
    }
}

/// Which linear layers get adapters and how (PEFT's `LoraConfig` fields of the same names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    pub r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    /// Hugging Face module names (`q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`,
    /// `up_proj`, `down_proj`), or `all-linear` for all seven.
    pub target_modules: Vec<String>,
    /// Scale by `alpha / √r` instead of `alpha / r`.
    pub use_rslora: bool,
    /// Seeds the initial matrices.
    pub seed: u64,
    /// `B` starts at zero, so a fresh adapter changes nothing (PEFT's default, `true`); `false`
    /// draws `B` like `A` (uniform in ±1/√r), as PEFT's `init_lora_weights=False` does for tests.
    pub init_lora_weights: bool,
}

/// The seven linear layers of a Llama block, by their Hugging Face names.
pub const LLAMA_LINEARS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

impl Default for LoraConfig {
    /// r 16, alpha 32, dropout 0.05 on the attention projections: the common LoRA recipe
    /// (PEFT's own defaults are r 8, alpha 8, no dropout).
    fn default() -> Self {
        Self {
            r: 16,
            lora_alpha: 32.0,
            lora_dropout: 0.05,
            target_modules: ["q_proj", "k_proj", "v_proj", "o_proj"]
                .map(String::from)
                .to_vec(),
            use_rslora: false,
            seed: 42,
            init_lora_weights: true,
        }
    }
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// The target modules with `all-linear` expanded, checked against [`LLAMA_LINEARS`].
    pub fn targets(&self) -> Result<Vec<String>> {
        let mut out = vec![];
        for t in &self.target_modules {
            if t == "all-linear" {
                out.extend(LLAMA_LINEARS.map(String::from));
            } else if LLAMA_LINEARS.contains(&t.as_str()) {
                out.push(t.clone());
            } else {
                bail!(
                    "target module `{t}` is not a Llama linear layer; choose among {} or all-linear",
                    LLAMA_LINEARS.join(", ")
                );
            }
        }
        out.sort_by_key(|t| LLAMA_LINEARS.iter().position(|l| l == t));
        out.dedup();
        Ok(out)
    }

    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            bail!("LoRA rank r must be at least 1");
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            bail!("lora_dropout must be in [0, 1), got {}", self.lora_dropout);
        }
        if self.target_modules.is_empty() {
            bail!("target_modules is empty: name the layers to adapt (or all-linear)");
        }
        self.targets().map(|_| ())
    }
}

/// One adapter: `A` `[r, in]`, `B` `[out, r]`, trainable.
#[derive(Clone)]
pub struct Adapter {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
    pub dropout: f64,
}

/// A frozen linear layer (maybe quantized) with an optional adapter.
pub struct LoraLinear {
    base: BaseWeight,
    bias: Option<Tensor>,
    /// 8-bit copy of the base for decoding steps (few rows, bound by memory bandwidth).
    q8: Option<QMatMul>,
    adapter: Option<Adapter>,
    /// The adapter is folded into a dense base (and so is not applied again).
    merged: bool,
}

/// Decoding batches up to this size use the 8-bit weights.
const Q8_MAX_ROWS: usize = 4;

impl LoraLinear {
    /// With `q8`, decoding steps multiply by an 8-bit (Q8_0) copy of the weight.
    pub fn new(base: BaseWeight, bias: Option<Tensor>, q8: bool) -> Result<Self> {
        let (_, inner) = base.dims()?;
        let q8 = if q8 && inner % 32 == 0 {
            Some(QMatMul::from_qtensor(QTensor::quantize(
                &base.dense()?,
                GgmlDType::Q8_0,
            )?)?)
        } else {
            None
        };
        Ok(Self {
            base,
            bias,
            q8,
            adapter: None,
            merged: false,
        })
    }

    pub fn base(&self) -> &BaseWeight {
        &self.base
    }

    pub fn adapter(&self) -> Option<&Adapter> {
        self.adapter.as_ref()
    }

    pub fn is_merged(&self) -> bool {
        self.merged
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The weight the layer applies, `[out, in]` in f32: the base with the adapter folded in.
    pub fn effective_weight(&self) -> Result<Tensor> {
        match (&self.adapter, self.merged) {
            (Some(a), false) => Ok((self.base.dense()? + Self::delta(a)?)?),
            _ => self.base.dense(),
        }
    }

    /// Adds a fresh adapter: `A` from PyTorch's `kaiming_uniform_(a=√5)` (uniform in
    /// ±1/√in) drawn from `rng`, `B` zero (or, without `init_lora_weights`, uniform in ±1/√r).
    pub fn add_adapter(&mut self, config: &LoraConfig, rng: &mut Rng) -> Result<&Adapter> {
        let (out, inner) = self.base.dims()?;
        let device = self.device();
        let mut uniform = |rows: usize, cols: usize| -> Result<Tensor> {
            let bound = 1.0 / (cols as f64).sqrt();
            let v: Vec<f32> = (0..rows * cols)
                .map(|_| ((rng.unit() * 2.0 - 1.0) * bound) as f32)
                .collect();
            Ok(Tensor::from_vec(v, (rows, cols), &device)?)
        };
        let a = uniform(config.r, inner)?;
        let b = if config.init_lora_weights {
            Tensor::zeros((out, config.r), DType::F32, &device)?
        } else {
            uniform(out, config.r)?
        };
        self.set_adapter(a, b, config.scale(), config.lora_dropout)
    }

    /// Sets the adapter's matrices (loaded from a file, or chosen by a test).
    pub fn set_adapter(
        &mut self,
        a: Tensor,
        b: Tensor,
        scale: f64,
        dropout: f64,
    ) -> Result<&Adapter> {
        let (out, inner) = self.base.dims()?;
        let r = a.dim(0)?;
        if a.dims() != [r, inner] || b.dims() != [out, r] {
            bail!(
                "LoRA matrices A {:?} and B {:?} do not fit a [{out}, {inner}] layer",
                a.dims(),
                b.dims()
            );
        }
        if self.merged {
            bail!("the layer holds a merged adapter; unmerge it first");
        }
        self.adapter = Some(Adapter {
            a: Var::from_tensor(&a.to_dtype(DType::F32)?)?,
            b: Var::from_tensor(&b.to_dtype(DType::F32)?)?,
            scale,
            dropout,
        });
        Ok(self.adapter.as_ref().expect("just set"))
    }

    fn device(&self) -> candle_core::Device {
        match &self.base {
            BaseWeight::Dense(w) => w.device().clone(),
            BaseWeight::Quantized(q) => q.device(),
        }
    }

    /// `scale · B · A`, `[out, in]`.
    fn delta(adapter: &Adapter) -> Result<Tensor> {
        Ok((adapter.b.as_tensor().matmul(adapter.a.as_tensor())? * adapter.scale)?.detach())
    }

    /// Folds the adapter into the base weight (`W + scale·B·A`), which becomes dense; the
    /// layer then costs no more than the base. [`unmerge`](Self::unmerge) takes it out again.
    pub fn merge(&mut self) -> Result<()> {
        let Some(adapter) = &self.adapter else {
            return Ok(());
        };
        if self.merged {
            return Ok(());
        }
        let merged = (self.base.dense()? + Self::delta(adapter)?)?;
        self.replace_base(BaseWeight::Dense(merged))?;
        self.merged = true;
        Ok(())
    }

    /// Subtracts a merged adapter from the base again.
    pub fn unmerge(&mut self) -> Result<()> {
        let Some(adapter) = &self.adapter else {
            return Ok(());
        };
        if !self.merged {
            return Ok(());
        }
        let base = (self.base.dense()? - Self::delta(adapter)?)?;
        self.replace_base(BaseWeight::Dense(base))?;
        self.merged = false;
        Ok(())
    }

    fn replace_base(&mut self, base: BaseWeight) -> Result<()> {
        if self.q8.is_some() {
            self.q8 = Some(QMatMul::from_qtensor(QTensor::quantize(
                &base.dense()?,
                GgmlDType::Q8_0,
            )?)?);
        }
        self.base = base;
        Ok(())
    }

    /// Inference: no autograd graph. `decoding`: one new position per sequence, where the 8-bit
    /// weights pay off; prompts (many rows) run through f32 GEMM.
    pub fn forward(&self, x: &Tensor, decoding: bool) -> Result<Tensor> {
        let (x2, mut out_dims) = rows(x)?;
        let n = x2.dim(0)?;
        let y = match (&self.q8, &self.base) {
            (Some(q), _) if decoding && n <= Q8_MAX_ROWS => q.forward(&x2)?,
            (_, BaseWeight::Dense(w)) if super::kernels::applies(&x2, &[DType::F32]) => {
                super::fused::matmul_xwt(&x2, w)?
            }
            (_, BaseWeight::Dense(w)) => x2.matmul(&w.t()?)?,
            (_, BaseWeight::Quantized(_)) => x2.matmul(&self.base.dense()?.t()?)?,
        };
        let mut y = self.add_bias(y)?;
        if let (Some(a), false) = (&self.adapter, self.merged) {
            let low = x2.matmul(&a.a.as_tensor().detach().t()?)?;
            y = (y + (low.matmul(&a.b.as_tensor().detach().t()?)? * a.scale)?)?;
        }
        *out_dims.last_mut().expect("rank ≥ 1") = y.dim(1)?;
        Ok(y.reshape(out_dims)?)
    }

    /// Training: differentiable in `x` and in the adapter (never in the base). With an adapter
    /// dropout and `rng`, the adapter's input is dropped out with a mask drawn from `rng`.
    pub fn forward_train(&self, x: &Tensor, rng: Option<&mut Rng>) -> Result<Tensor> {
        if self.merged {
            bail!("a merged layer cannot be trained; unmerge it first");
        }
        let (x2, mut out_dims) = rows(x)?;
        let mut y = self.add_bias(frozen_matmul(&x2, &self.base)?)?;
        if let Some(a) = &self.adapter {
            let input = match rng {
                Some(rng) if a.dropout > 0.0 => dropout(&x2, a.dropout, rng)?,
                _ => x2.clone(),
            };
            let low = super::precision::matmul(&input, &a.a.as_tensor().t()?)?;
            y = (y + (super::precision::matmul(&low, &a.b.as_tensor().t()?)? * a.scale)?)?;
        }
        *out_dims.last_mut().expect("rank ≥ 1") = y.dim(1)?;
        Ok(y.reshape(out_dims)?)
    }

    fn add_bias(&self, y: Tensor) -> Result<Tensor> {
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// `x` as 2-D rows (matmul on 2-D is faster than a broadcast 3-D weight on candle's CPU
/// backend), and the shape to give the output back.
fn rows(x: &Tensor) -> Result<(Tensor, Vec<usize>)> {
    let dims = x.dims().to_vec();
    let last = *dims.last().expect("linear input has a last dimension");
    Ok((x.reshape((x.elem_count() / last, last))?, dims))
}

/// Inverted dropout with a mask drawn from `rng` (so a resumed run drops the same units).
fn dropout(x: &Tensor, p: f64, rng: &mut Rng) -> Result<Tensor> {
    let keep = (1.0 / (1.0 - p)) as f32;
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.unit() < p { 0.0 } else { keep })
        .collect();
    Ok((x * Tensor::from_vec(mask, x.shape(), x.device())?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn random(rows: usize, cols: usize, seed: u64) -> Tensor {
        let mut rng = Rng::new(seed);
        let v: Vec<f32> = (0..rows * cols).map(|_| rng.unit() as f32 - 0.5).collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// The frozen matmul gives candle's product and input gradient, for f32 and quantized
    /// weights (dequantized on the fly), and no gradient to the weight.
    #[test]
    fn frozen_matmul_matches_the_composed_product_and_input_gradient() {
        let w = random(48, 64, 1);
        for base in [
            BaseWeight::Dense(w.clone()),
            BaseWeight::Quantized(Arc::new(QTensor::quantize(&w, GgmlDType::Q4_0).unwrap())),
            BaseWeight::Quantized(Arc::new(QTensor::quantize(&w, GgmlDType::Q8_0).unwrap())),
        ] {
            let dense = base.dense().unwrap();
            let x = Var::from_tensor(&random(5, 64, 2)).unwrap();
            let probe = random(5, 48, 3);
            let ours = frozen_matmul(x.as_tensor(), &base).unwrap();
            let want = x.as_tensor().matmul(&dense.t().unwrap()).unwrap();
            assert!(max_diff(&ours, &want) < 1e-5);
            let g_ours = (ours * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g_want = (want * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let (a, b) = (
                g_ours.get(x.as_tensor()).unwrap(),
                g_want.get(x.as_tensor()).unwrap(),
            );
            assert!(max_diff(a, b) < 1e-5, "{:?}", base.quantization());
            assert!(g_ours.get(&dense).is_none());
        }
    }

    #[test]
    fn quantized_bases_take_a_fraction_of_the_memory() {
        let w = random(64, 256, 4);
        let q = BaseWeight::Quantized(Arc::new(QTensor::quantize(&w, GgmlDType::Q4_1).unwrap()));
        // Q4_1: 32 weights in 20 bytes, against 128 in f32.
        assert_eq!(q.bytes() * 128, BaseWeight::Dense(w).bytes() * 20);
    }

    #[test]
    fn settings_are_checked_and_all_linear_expands() {
        let c = LoraConfig {
            target_modules: vec!["all-linear".into(), "q_proj".into()],
            ..Default::default()
        };
        assert_eq!(
            c.targets().unwrap(),
            LLAMA_LINEARS.map(String::from).to_vec()
        );
        let bad = LoraConfig {
            target_modules: vec!["qkv".into()],
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("`qkv`"));
        assert_eq!(LoraConfig::default().scale(), 2.0);
        let rs = LoraConfig {
            use_rslora: true,
            ..Default::default()
        };
        assert_eq!(rs.scale(), 8.0);
    }
}
