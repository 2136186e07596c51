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
    let tokens = model.forward(&ids, &mask, Mode::Train).unwrap();
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
    let worst = common::max_abs_diff(&on_real(Mode::Train), &on_real(Mode::Infer));
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
