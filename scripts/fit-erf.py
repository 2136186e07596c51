# Fits the rational erf approximation used by src/models/fused.rs (least squares with
# Loeb reweighting). Needs numpy: python scripts/fit-erf.py
import numpy as np
from math import erf
x = np.linspace(0, 4.0, 40001)
y = np.array([erf(v) for v in x])
np_, nq = 7, 5   # erf(x) ~ x * P(x^2) / Q(x^2), P has np_ terms, Q has nq terms with q0 = 1
x2 = x * x
w = np.ones_like(x)
for it in range(30):
    # x*P(x2) - y*(Q(x2)-1) = y  (linear in p_i, q_j for j>=1)
    A = np.hstack([np.stack([x * x2**i for i in range(np_)], 1), np.stack([-y * x2**j for j in range(1, nq)], 1)])
    coef, *_ = np.linalg.lstsq(A * w[:, None], y * w, rcond=None)
    p, q = coef[:np_], np.concatenate([[1.0], coef[np_:]])
    Q = sum(q[j] * x2**j for j in range(nq))
    approx = x * sum(p[i] * x2**i for i in range(np_)) / Q
    err = approx - y
    # Lawson-style reweighting towards minimax, and 1/Q to undo the linearisation
    w = 1.0 / Q
print("max abs err (f64 eval)", np.abs(err).max())
# evaluate in float32 as the Rust code will (Horner)
xf = x.astype(np.float32); x2f = xf * xf
P = np.float32(p[-1])
for c in p[-2::-1]: P = P * x2f + np.float32(c)
Qf = np.float32(q[-1])
for c in q[-2::-1]: Qf = Qf * x2f + np.float32(c)
af = xf * P / Qf
print("max abs err (f32 eval)", np.abs(af.astype(np.float64) - y).max(), "at 4:", af[-1])
print("P =", [float(v) for v in p]); print("Q =", [float(v) for v in q])
