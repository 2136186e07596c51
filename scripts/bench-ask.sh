#!/usr/bin/env bash
# Query latency of the tuned pipeline's engine on SciFact's 5,183 abstracts: one claim at a time
# (embed + search + rerank + generate, models loaded once), and the chunk index build time.
#
#   bash scripts/bench-ask.sh PIPELINE_DIR [N_CLAIMS]
#
# PIPELINE_DIR is a `ragtune pipeline` run over SciFact (e.g. the one in the README's
# benchmarks). Prints one JSON line last: median and p90 seconds per step, and the index build.
set -euo pipefail
dir=$(realpath "${1:?usage: bench-ask.sh PIPELINE_DIR [N_CLAIMS]}")
n=${2:-20}
cd "$(dirname "$0")/.."
scifact=${SCIFACT:-../shared/datasets/scifact}
source scripts/bench-lib.sh
mapfile -t claims < <(head -n "$n" "$scifact/queries.jsonl" | python3 -c 'import json,sys; [print(json.loads(l)["text"]) for l in sys.stdin]')
out=$(mktemp)
"$bin" ask --pipeline "$dir" --batch-size 1 --json "${claims[@]}" > "$out"
python3 - "$out" "$dir/index/index.json" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
index = json.load(open(sys.argv[2]))
def q(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p * (len(values) - 1))))]
steps = ["embed", "search", "rerank", "generate"]
total = [sum(r["timings"][s] for s in steps) for r in rows]
summary = {s: {"median": statistics.median(r["timings"][s] for r in rows), "p90": q([r["timings"][s] for r in rows], 0.9)} for s in steps}
summary["total"] = {"median": statistics.median(total), "p90": q(total, 0.9)}
for s, v in summary.items():
    print(f"{s:<9} median {v['median']:.3f} s   p90 {v['p90']:.3f} s")
print(f"index: {index['chunks']} chunks, built in {index['seconds']:.1f} s ({index['model']})")
print(json.dumps({"claims": len(rows), "seconds": summary, "index_chunks": index["chunks"], "index_build_seconds": index["seconds"]}))
PY
