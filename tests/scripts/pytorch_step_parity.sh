#!/usr/bin/env bash
# The GPU benchmark's two sides compute the same thing: cuda_step (skipgrad) writes its weights and batch with
# --weights-dir, bench/pytorch_cuda_step.py (PyTorch) loads them, and both print the loss at the initial weights and
# after one Adam step. Here PyTorch runs on the CPU at a tiny shape, and skipgrad on DEVICE (cpu, or cuda: a GPU or
# the CUDA emulator's build), for LayerNorm and DyT, sinusoidal, rotary, ALiBi and T5 positions, Post-LN and Pre-LN;
# the losses must agree to 2e-6 relative. PyTorch is the independent reference: any torch from 1.13 on (Debian's
# python3-torch, or PyPI's). Without one the test is skipped (exit 77).
#   pytorch_step_parity.sh CUDA_STEP_BINARY SOURCE_DIR [DEVICE]
set -euo pipefail
cuda_step=$1
src=$2
device=${3:-cpu}
python=""
for p in "${PYTHON:-python3}" /usr/bin/python3; do
  if command -v "$p" >/dev/null && "$p" -c "import torch, numpy" 2>/dev/null; then python=$p && break; fi
done
[[ -n $python ]] || { echo "pytorch_step_parity: skipped: no python3 with torch and numpy"; exit 77; }
export OMP_NUM_THREADS=1  # a tiny shape: one thread each, not two programs' thread pools against CTest's other tests
dir=$(mktemp -d /tmp/pytorch_step_parity.XXXXXX)
trap 'rm -rf "$dir"' EXIT
shape=batch=4,src_len=8,tgt_len=8,vocab=50,d_model=32,heads=4,d_ff=64,layers=2
common=(--precision fp32 --topologies post_ln,pre_ln --shape "$shape" --weights-dir "$dir/w" --json
        --warmup 2 --rounds 1 --steps 1)
for run in "layer_norm sinusoidal" "dyt sinusoidal" "dyt rope" "layer_norm alibi" "layer_norm t5"; do
  read -r norm positions <<<"$run"
  args=("${common[@]}" --norm "$norm" --positions "$positions")
  "$cuda_step" "${args[@]}" --device "$device" --no-ceiling >"$dir/skipgrad.jsonl" 2>"$dir/skipgrad.err" ||
    { cat "$dir/skipgrad.err"; echo "FAIL: cuda_step ${args[*]}"; exit 1; }
  "$python" "$src/bench/pytorch_cuda_step.py" "${args[@]}" --device cpu >"$dir/pytorch.jsonl" 2>"$dir/pytorch.err" ||
    { cat "$dir/pytorch.err"; echo "FAIL: pytorch_cuda_step.py ${args[*]}"; exit 1; }
  "$python" - "$dir/skipgrad.jsonl" "$dir/pytorch.jsonl" "$run" <<'EOF'
import json, sys
def steps(path):
    rows = [json.loads(line) for line in open(path) if line.startswith("{")]
    return {r["topology"]: r for r in rows if r.get("kind") == "step"}
ours, theirs, run = steps(sys.argv[1]), steps(sys.argv[2]), sys.argv[3]
if sorted(ours) != ["post_ln", "pre_ln"] or sorted(theirs) != sorted(ours):
    sys.exit(f"FAIL {run}: step rows {sorted(ours)} (skipgrad) and {sorted(theirs)} (PyTorch)")
for topology in ours:
    for key in ("loss_initial", "loss_after_update"):
        a, b = ours[topology][key], theirs[topology][key]
        ok = abs(a - b) <= 2e-6 * abs(b)
        print(f"{run} {topology} {key}: skipgrad {a:.7f} PyTorch {b:.7f} {'ok' if ok else 'FAIL'}")
        if not ok:
            sys.exit(1)
EOF
done
version=$("$python" -c 'import torch; print(torch.__version__)')
echo "pytorch_step_parity: skipgrad on $device and PyTorch $version on cpu agree"
