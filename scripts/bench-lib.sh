# Sourced by the bench scripts (from the repository root): seeds the two real models into the
# Hugging Face cache, keeps the hub offline, and sets `bin` to the ragtune binary — RAGTUNE_BIN
# when given, else a fresh release build.
bash scripts/seed-models.sh >/dev/null
export HF_HUB_OFFLINE=1
if [ -n "${RAGTUNE_BIN:-}" ]; then
  bin=$(realpath "$RAGTUNE_BIN")
else
  cargo build --release --quiet
  bin=$PWD/target/release/ragtune
fi
