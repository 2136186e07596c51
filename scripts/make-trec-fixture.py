"""Writes tests/fixtures/trec_expected.json: pytrec_eval's per-query values for the hand-made
cases in tests/fixtures/trec_cases.json. Run once in a venv with pytrec-eval-terrier installed:

    python scripts/make-trec-fixture.py

MRR@k is trec's recip_rank on the run cut to its top k (trec order: score descending, then
document id descending), which is what pytrec_eval computes for a run of k documents.
"""
import json
from pathlib import Path

import pytrec_eval

root = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
cases = json.loads((root / "trec_cases.json").read_text())
qrels, run, ks = cases["qrels"], cases["run"], cases["ks"]

measures = {f"{m}.{','.join(map(str, ks))}" for m in ("P", "recall", "ndcg_cut", "map_cut", "success")}
full = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)

names = {"P": "precision", "recall": "recall", "ndcg_cut": "ndcg", "map_cut": "map", "success": "accuracy"}
expected = {}
for qid, values in full.items():
    out = {}
    for key, v in values.items():
        measure, k = key.rsplit("_", 1)
        out[f"{names[measure]}@{k}"] = v
    for k in ks:
        ordered = sorted(run[qid].items(), key=lambda x: x[0].encode(), reverse=True)
        ordered.sort(key=lambda x: -x[1])  # stable: equal scores keep doc id descending
        cut = {qid: dict(ordered[:k])}
        rr = pytrec_eval.RelevanceEvaluator({qid: qrels[qid]}, {"recip_rank"}).evaluate(cut)
        out[f"mrr@{k}"] = rr[qid]["recip_rank"]
    expected[qid] = out

(root / "trec_expected.json").write_text(json.dumps(
    {"made_with": f"pytrec_eval {getattr(pytrec_eval, '__version__', '?')}", "per_query": expected},
    indent=1, sort_keys=True))
print(f"wrote {len(expected)} queries")
