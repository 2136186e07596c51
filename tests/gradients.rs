//! The encoder must be trainable: a loss on the pooled sentence embedding gives every weight a
//! non-zero gradient that agrees with a finite-difference estimate. candle's fused kernels drop
//! gradients silently, so this test is what guarantees the next stage can fine-tune at all.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use ragtune::models::bert::{BertModel, Mode};
use ragtune::models::pooling::{l2_normalize, Pooling};

fn batch() -> (Tensor, Tensor) {
    // Two rows of different length: the second is padded, so the mask is exercised too.
    let ids = Tensor::new(&[[2u32, 4, 9, 17, 3], [2, 12, 3, 0, 0]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1], [1, 1, 1, 0, 0]], &Device::Cpu).unwrap();
    (ids, mask)
}

fn loss(model: &BertModel, probe: &Tensor, pooling: Pooling) -> Tensor {
    let (ids, mask) = batch();
    let tokens = model.forward(&ids, &mask, Mode::Train(None)).unwrap();
    let pooled = l2_normalize(&pooling.apply(&tokens, &mask).unwrap()).unwrap();
    (pooled * probe).unwrap().sum_all().unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap()
}

#[test]
fn every_weight_gets_the_finite_difference_gradient() {
    for pooling in [Pooling::Mean, Pooling::Cls, Pooling::Max] {
        let (model, varmap) = common::tiny_bert(DType::F64);
        let probe = Tensor::randn(0f64, 1., (2, 8), &Device::Cpu).unwrap();
        let grads = loss(&model, &probe, pooling).backward().unwrap();

        let vars = varmap.data().lock().unwrap().clone();
        assert_eq!(
            vars.len(),
            5 + 16 * 2,
            "embeddings (3 tables + LayerNorm) and 16 tensors per layer"
        );
        let mut checked = 0;
        for (name, var) in &vars {
            let grad = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{pooling:?}: no gradient for {name}"));
            let flat_grad: Vec<f64> = grad.flatten_all().unwrap().to_vec1().unwrap();
            // Rows of the token-type and position tables that no input touches rightly get zero.
            let touched_only =
                name.contains("token_type") || name.contains("position") || name.contains("word");
            if name.ends_with("attention.self.key.bias") {
                // q·(k + b) adds the same q·b to every score of a softmax row, and softmax is
                // shift-invariant: this gradient is exactly zero in any framework.
                assert!(
                    flat_grad.iter().all(|g| g.abs() < 1e-9),
                    "{pooling:?}: key bias gradient should vanish"
                );
            } else {
                assert!(
                    flat_grad.iter().any(|g| g.abs() > 1e-12),
                    "{pooling:?}: zero gradient for {name}"
                );
            }

            // Finite differences on the largest-gradient entry and two fixed others.
            let n = flat_grad.len();
            let argmax = (0..n)
                .max_by(|&a, &b| flat_grad[a].abs().total_cmp(&flat_grad[b].abs()))
                .unwrap();
            let picks = if touched_only {
                vec![argmax]
            } else {
                vec![argmax, 0, n / 2]
            };
            for i in picks {
                let fd = finite_difference(&model, &probe, pooling, var, i);
                let an = flat_grad[i];
                let tol = 1e-6 + 1e-4 * an.abs().max(fd.abs());
                assert!(
                    (fd - an).abs() <= tol,
                    "{pooling:?} {name}[{i}]: autograd {an:e} vs finite difference {fd:e}"
                );
                checked += 1;
            }
        }
        assert!(checked > 80);
    }
}

fn finite_difference(
    model: &BertModel,
    probe: &Tensor,
    pooling: Pooling,
    var: &Var,
    index: usize,
) -> f64 {
    let original = var.as_tensor().copy().unwrap();
    let shape = original.shape().clone();
    let eps = 1e-6;
    let at = |delta: f64| {
        let mut flat: Vec<f64> = original.flatten_all().unwrap().to_vec1().unwrap();
        flat[index] += delta;
        var.set(&Tensor::from_vec(flat, shape.clone(), &Device::Cpu).unwrap())
            .unwrap();
        scalar(&loss(model, probe, pooling))
    };
    let (plus, minus) = (at(eps), at(-eps));
    var.set(&original).unwrap();
    (plus - minus) / (2.0 * eps)
}

#[test]
fn train_and_infer_modes_compute_the_same_function() {
    let (model, _) = common::tiny_bert(DType::F32);
    let (ids, mask) = batch();
    // Outputs at padding positions are unspecified (the training kernel leaves them zero):
    // compare real tokens only.
    let real = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
    let on_real = |mode| {
        let tokens = model.forward(&ids, &mask, mode).unwrap();
        tokens.broadcast_mul(&real).unwrap()
    };
    let worst = common::max_abs_diff(&on_real(Mode::Train(None)), &on_real(Mode::Infer));
    assert!(worst < 1e-5, "modes differ by {worst}");
}

#[test]
fn padding_does_not_change_an_embedding() {
    let (model, _) = common::tiny_bert(DType::F32);
    let alone_ids = Tensor::new(&[[2u32, 12, 3]], &Device::Cpu).unwrap();
    let alone_mask = alone_ids.ones_like().unwrap();
    let alone = Pooling::Mean
        .apply(
            &model.forward(&alone_ids, &alone_mask, Mode::Infer).unwrap(),
            &alone_mask,
        )
        .unwrap();
    let (ids, mask) = batch();
    let padded = Pooling::Mean
        .apply(&model.forward(&ids, &mask, Mode::Infer).unwrap(), &mask)
        .unwrap();
    let worst = common::max_abs_diff(&alone, &padded.narrow(0, 1, 1).unwrap());
    assert!(worst < 1e-5, "padding changed the embedding by {worst}");
}

/// The Llama training kernels (RMSNorm, SwiGLU, rope in both layouts) against the same functions
/// composed from candle ops, forward and backward, in f64.
#[test]
fn llama_kernels_match_composed_ops_forward_and_backward() {
    use candle_core::D;
    use ragtune::models::train_ops::{rms_norm, rope, swiglu};
    let dev = Device::Cpu;
    let diff = common::max_abs_diff_f64;
    let grad_of = |out: &Tensor, probe: &Tensor, v: &Var| -> Tensor {
        (out * probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(v.as_tensor())
            .unwrap()
            .clone()
    };
    // RMSNorm, gradients of x and of the weight.
    let x = Var::from_tensor(&Tensor::randn(0f64, 1., (3, 5, 8), &dev).unwrap()).unwrap();
    let w = Var::from_tensor(&Tensor::randn(1f64, 0.2, 8, &dev).unwrap()).unwrap();
    let probe = Tensor::randn(0f64, 1., (3, 5, 8), &dev).unwrap();
    let ours = rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
    let ms = x
        .as_tensor()
        .sqr()
        .unwrap()
        .mean_keepdim(D::Minus1)
        .unwrap();
    let want = x
        .as_tensor()
        .broadcast_div(&(ms + 1e-5).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(w.as_tensor())
        .unwrap();
    assert!(diff(&ours, &want) < 1e-12);
    assert!(diff(&grad_of(&ours, &probe, &x), &grad_of(&want, &probe, &x)) < 1e-12);
    assert!(diff(&grad_of(&ours, &probe, &w), &grad_of(&want, &probe, &w)) < 1e-12);
    // SwiGLU.
    let (a, b) = (
        Var::from_tensor(&Tensor::randn(0f64, 2., (4, 6), &dev).unwrap()).unwrap(),
        Var::from_tensor(&Tensor::randn(0f64, 1., (4, 6), &dev).unwrap()).unwrap(),
    );
    let probe = Tensor::randn(0f64, 1., (4, 6), &dev).unwrap();
    let ours = swiglu(a.as_tensor(), b.as_tensor()).unwrap();
    let want = (a.as_tensor().silu().unwrap() * b.as_tensor()).unwrap();
    assert!(diff(&ours, &want) < 1e-12);
    for v in [&a, &b] {
        assert!(diff(&grad_of(&ours, &probe, v), &grad_of(&want, &probe, v)) < 1e-12);
    }
    // Rope on (batch 2, len 3, heads 2, head_dim 4) at arbitrary angles.
    let x = Var::from_tensor(&Tensor::randn(0f64, 1., (2, 3, 2, 4), &dev).unwrap()).unwrap();
    let theta = Tensor::randn(0f64, 2., (2, 3, 1, 2), &dev).unwrap();
    let (cos, sin) = (theta.cos().unwrap(), theta.sin().unwrap());
    let probe = Tensor::randn(0f64, 1., (2, 3, 2, 4), &dev).unwrap();
    for interleaved in [false, true] {
        let ours = rope(x.as_tensor(), &cos, &sin, interleaved).unwrap();
        let want = if interleaved {
            let p = x.as_tensor().reshape((2, 3, 2, 2, 2)).unwrap();
            let (x0, x1) = (p.narrow(4, 0, 1).unwrap(), p.narrow(4, 1, 1).unwrap());
            let (c, s) = (cos.unsqueeze(4).unwrap(), sin.unsqueeze(4).unwrap());
            let r0 = (x0.broadcast_mul(&c).unwrap() - x1.broadcast_mul(&s).unwrap()).unwrap();
            let r1 = (x0.broadcast_mul(&s).unwrap() + x1.broadcast_mul(&c).unwrap()).unwrap();
            Tensor::cat(&[r0, r1], 4)
                .unwrap()
                .reshape((2, 3, 2, 4))
                .unwrap()
        } else {
            let (x0, x1) = (
                x.as_tensor().narrow(3, 0, 2).unwrap(),
                x.as_tensor().narrow(3, 2, 2).unwrap(),
            );
            let r0 = (x0.broadcast_mul(&cos).unwrap() - x1.broadcast_mul(&sin).unwrap()).unwrap();
            let r1 = (x1.broadcast_mul(&cos).unwrap() + x0.broadcast_mul(&sin).unwrap()).unwrap();
            Tensor::cat(&[r0, r1], 3).unwrap()
        };
        assert!(diff(&ours, &want) < 1e-12, "interleaved {interleaved}");
        assert!(diff(&grad_of(&ours, &probe, &x), &grad_of(&want, &probe, &x)) < 1e-12);
    }
}

// The same checks through candle's composed ops: the path CUDA takes (see `common::through_composed_ops`).

#[test]
fn every_weight_gets_the_finite_difference_gradient_through_composed_ops() {
    common::through_composed_ops(every_weight_gets_the_finite_difference_gradient);
}

#[test]
fn train_and_infer_modes_compute_the_same_function_through_composed_ops() {
    common::through_composed_ops(train_and_infer_modes_compute_the_same_function);
}

#[test]
fn padding_does_not_change_an_embedding_through_composed_ops() {
    common::through_composed_ops(padding_does_not_change_an_embedding);
}
