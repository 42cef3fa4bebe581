#!/usr/bin/env bash
# The GPU benchmark of issue 6 in one command (method: docs/cuda_benchmark.md). Builds bench/cuda_step, then runs
# skipgrad (cuda_step) and PyTorch eager (bench/pytorch_cuda_step.py) in turn, ROUNDS times, on the same GPU, fp32
# and TF32, both from the same weights and batch, and prints a Markdown table to stdout.
#
#   scripts/bench_cuda.sh [BUILD_DIR]     BUILD_DIR: default build-cuda; configured with SKIPGRAD_CUDA=ON,
#                                         SKIPGRAD_BENCH=ON (a new folder also with tests, examples, libtorch off)
# Environment:
#   ROUNDS (3)                 alternations; the program that goes first changes every round
#   RUN_ARGS                   for both programs, default "--warmup 3 --rounds 5 --steps 5" (per process and
#                              configuration: 3 warm-up steps, then 5 timed rounds of 5 steps, one sample per round)
#   TOPOLOGIES (post_ln,pre_ln), PRECISIONS (fp32,tf32,bf16)
#   PYTHON (python3)           a Python whose torch has CUDA
#   LOG_DIR                    default $OUT when set (what comes back from the device machine), else
#                              BUILD_DIR/bench-cuda-out: cmake.log, build.log, runs.jsonl (every JSON line of every
#                              run), stderr.log, table.md
#   JOBS                       build parallelism, default nproc
#   PYTHON_LD_LIBRARY_PATH     when set (empty: unset), the LD_LIBRARY_PATH of the Python programs (gpu_run.sh keeps
#                              the packed binaries' libraries, Debian's libstdc++ among them, away from PyTorch)
#   CUDA_STEP                  a cuda_step binary to run instead of building one (scripts/gpu_run.sh passes the one
#                              scripts/gpu_pack.sh built: the GPU machine cannot build, it has no OpenBLAS)
#   DEADLINE_S                 seconds from this script's start by which the rounds must be done: a round is not
#                              started when the last one's duration would not fit (scripts/gpu_run.sh's budget)
#   DEVICE=cpu [SHAPE=...]     smoke test without a GPU: both programs on the CPU at a tiny shape, fp32 only
#   PROFILE (1)                the first round profiles one extra step per configuration (--profile) of both:
#                              LOG_DIR/profiles/profile_<topology>_<precision>.{txt,trace.json} (skipgrad's
#                              profiler) and pytorch_profile_*.{txt,trace.json} (torch.profiler); the table ends with
#                              skipgrad's ops by device time. 0: no profile
# Without a GPU (and DEVICE unset) it prints "bench_cuda.sh: skipped: no CUDA device" and exits 0, before building.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${1:-$ROOT/build-cuda}
[[ $BUILD_DIR = /* ]] || BUILD_DIR=$PWD/$BUILD_DIR
LOG_DIR=${LOG_DIR:-${OUT:-$BUILD_DIR/bench-cuda-out}}
ROUNDS=${ROUNDS:-3}
PYTHON=${PYTHON:-python3}
TOPOLOGIES=${TOPOLOGIES:-post_ln,pre_ln}
PRECISIONS=${PRECISIONS:-fp32,tf32,bf16}
read -r -a RUN_ARGS <<<"${RUN_ARGS:---warmup 3 --rounds 5 --steps 5}"
DEVICE=${DEVICE:-cuda}
log() { echo "bench_cuda.sh: $*" >&2; }

if [[ $DEVICE == cuda ]]; then
  if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU' && ! ls /dev/nvidia[0-9]* >/dev/null 2>&1; then
    echo "bench_cuda.sh: skipped: no CUDA device (nvidia-smi lists no GPU, no /dev/nvidia0)"
    exit 0
  fi
  DEVICE_ARGS=(--device cuda)
else
  SHAPE=${SHAPE:-batch=4,src_len=8,tgt_len=8,vocab=64,d_model=32,heads=2,d_ff=64,layers=2}
  PRECISIONS=fp32
  DEVICE_ARGS=(--device cpu --shape "$SHAPE")
fi
mkdir -p "$LOG_DIR"
rm -rf "$LOG_DIR/profiles"
: >"$LOG_DIR/runs.jsonl"
: >"$LOG_DIR/stderr.log"

# ---- build cuda_step only, unless one is given
CUDA_STEP=${CUDA_STEP:-}
if [[ -z $CUDA_STEP ]]; then
  CUDA_STEP=$BUILD_DIR/bench/cuda_step
  lean=()
  [[ -f $BUILD_DIR/CMakeCache.txt ]] ||
    lean=(-DCMAKE_BUILD_TYPE=Release -DSKIPGRAD_TESTS=OFF -DSKIPGRAD_EXAMPLES=OFF -DSKIPGRAD_BENCH_LIBTORCH=OFF)
  log "building cuda_step in $BUILD_DIR (logs in $LOG_DIR)"
  if ! cmake -S "$ROOT" -B "$BUILD_DIR" -DSKIPGRAD_CUDA=ON -DSKIPGRAD_BENCH=ON "${lean[@]}" >"$LOG_DIR/cmake.log" 2>&1; then
    tail -20 "$LOG_DIR/cmake.log" >&2
    log "cmake failed (the build needs nvcc, OpenBLAS with pkg-config, OpenMP: see docs/cuda_benchmark.md)"
    exit 1
  fi
  if ! cmake --build "$BUILD_DIR" --target cuda_step -j "${JOBS:-$(nproc)}" >"$LOG_DIR/build.log" 2>&1; then
    tail -30 "$LOG_DIR/build.log" >&2
    log "build failed"
    exit 1
  fi
fi

# ---- the runs, alternating
WEIGHTS=$(mktemp -d /tmp/bench_cuda.XXXXXX)
trap 'rm -rf "$WEIGHTS"' EXIT
COMMON=(--json --topologies "$TOPOLOGIES" --precision "$PRECISIONS" --weights-dir "$WEIGHTS" "${DEVICE_ARGS[@]}"
        "${RUN_ARGS[@]}")
# A failing run is logged and the rounds go on: what it printed (its "error" lines too) stays in runs.jsonl.
run_skipgrad() {  # [extra cuda_step arguments]
  local out rc=0
  out=$("$CUDA_STEP" "${COMMON[@]}" "$@" 2>>"$LOG_DIR/stderr.log") || rc=$?
  if grep -q 'skipped: no CUDA device' <<<"$out"; then
    echo "bench_cuda.sh: $out"
    exit 0
  fi
  echo "$out" >>"$LOG_DIR/runs.jsonl"
  ((rc == 0)) || { tail -5 "$LOG_DIR/stderr.log" >&2; log "cuda_step exited with $rc"; }
}
python() {  # the Python programs, with their own LD_LIBRARY_PATH when one is given
  if [[ -v PYTHON_LD_LIBRARY_PATH ]]; then
    if [[ -n $PYTHON_LD_LIBRARY_PATH ]]; then LD_LIBRARY_PATH=$PYTHON_LD_LIBRARY_PATH "$PYTHON" "$@"
    else env -u LD_LIBRARY_PATH "$PYTHON" "$@"; fi
  else
    "$PYTHON" "$@"
  fi
}
run_pytorch() {  # [extra pytorch_cuda_step.py arguments]
  local rc=0
  PYTHONUNBUFFERED=1 python "$ROOT/bench/pytorch_cuda_step.py" "${COMMON[@]}" "$@" >>"$LOG_DIR/runs.jsonl" \
    2>>"$LOG_DIR/stderr.log" || rc=$?
  ((rc == 0)) || { tail -5 "$LOG_DIR/stderr.log" >&2; log "pytorch_cuda_step exited with $rc"; }
  grep -q 'pytorch_cuda_step: skipped' "$LOG_DIR/runs.jsonl" && log "PyTorch did not run: $(grep -m1 skipped "$LOG_DIR/runs.jsonl")"
  return 0
}
# ---- the table: every round sample of every run pooled per (topology, precision, framework); written after every
# round (a run cut short keeps the rounds done), printed at the end
write_table() {
  python - "$LOG_DIR/runs.jsonl" "$LOG_DIR/profiles" >"$LOG_DIR/table.md.tmp" <<'EOF' && mv "$LOG_DIR/table.md.tmp" "$LOG_DIR/table.md"
import glob, json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def mib(v):  # the largest over the runs; "–" where the program cannot tell (the CPU smoke test)
    v = [x for x in v if x is not None]
    return f"{max(v):.0f}" if v else "–"
def pct(v, p):  # linear interpolation between order statistics, as bench::summarize; NaN (null) left out
    v = sorted(x for x in v if x is not None and x == x)
    if not v:
        return float("nan")
    x = p * (len(v) - 1); i = int(x)
    return v[i] if i + 1 >= len(v) else v[i] * (1 - (x - i)) + v[i + 1] * (x - i)
def num(v, spec):  # "–" for a value a program could not give (null: NaN or infinite)
    return "–" if v is None or v != v else format(v, spec)
dev = {r["framework"]: r for r in rows if r["kind"] == "device"}
sg = dev.get("skipgrad", {})
ceiling, operands = {}, {}
for r in rows:
    if r["kind"] == "ceiling":
        ceiling[r["precision"]] = max(ceiling.get(r["precision"], 0), r["tflops"] or 0)
        operands[r["precision"]] = r.get("operands", "float32")
steps, order = {}, []
for r in rows:
    if r["kind"] != "step":
        continue
    key = (r["topology"], r["precision"], r["framework"])
    if key not in steps:
        steps[key] = dict(first=r, ms=[], host=[], peak=[], used=[], fwd=[], bwd=[], upd=[]); order.append(key)
    s = steps[key]
    s["ms"] += r["round_ms"]; s["host"].append(r["host_ms"])
    for k, v in (("fwd", "forward_ms"), ("bwd", "backward_ms"), ("upd", "update_ms")):
        if r.get(v) is not None:
            s[k].append(r[v])
    s["peak"].append(r["peak_alloc_mib"]); s["used"].append(r["device_used_mib"])
tokens = sg.get("batch", 0) * sg.get("tgt_len", 0)
print(f"## skipgrad vs PyTorch, one training step of the issue-6 model\n")
for name, d in dev.items():
    print(f"- {name}: {d['device']}" + (f", torch {d['torch']}, CUDA {d['cuda']}" if "torch" in d else ""))
print(f"- {sg.get('step_tflop', float('nan')):.3f} TFLOP of matrix products per step, {tokens} target tokens")
for p, t in ceiling.items():
    what = ("bfloat16 operands and results, as PyTorch's autocast; skipgrad's bf16 option keeps float32 ones"
            if operands.get(p) == "bfloat16" else "float32 operands and results")
    print(f"- GEMM ceiling (cuBLAS, OpenBLAS on the CPU, alone on the model's linear-layer shapes, weighted), {p} ({what}): "
          f"{t:.1f} TFLOP/s")
print("\n| topology | precision | framework | ms/step median [p25–p75] | host ms/step | target tok/s | peak alloc MiB "
      "(device used) | TFLOP/s | % of GEMM ceiling | time / skipgrad's |")
print("|---|---|---|---|---|---|---|---|---|---|")
for key in sorted(order, key=lambda k: (k[0], k[1], k[2] != "skipgrad")):
    s, (topo, prec, fw) = steps[key], key
    med = pct(s["ms"], 0.5)
    base = steps.get((topo, prec, "skipgrad"))
    tf = sg.get("step_tflop", float("nan")) / (med * 1e-3) if med > 0 else float("nan")
    print(f"| {topo} | {prec} | {fw} | {med:.2f} [{pct(s['ms'], .25):.2f}–{pct(s['ms'], .75):.2f}] | "
          f"{num(pct(s['host'], .5), '.2f')} | {num(tokens / (med * 1e-3) if med > 0 else None, ',.0f')} | "
          f"{mib(s['peak'])} ({mib(s['used'])}) | {num(tf, '.1f')} | " +
          (f"{100 * tf / ceiling[prec]:.0f}%" if ceiling.get(prec) and tf == tf else "–") + " | " +
          (f"{med / pct(base['ms'], 0.5):.2f}" if base else "–") + " |")
print("\nLoss of the first warm-up step (shared initial weights and batch) and of the second (one Adam step later):\n")
print("| topology | precision | framework | initial loss | rel. diff vs skipgrad | after one update | rel. diff |")
print("|---|---|---|---|---|---|---|")
for key in sorted(order, key=lambda k: (k[0], k[1], k[2] != "skipgrad")):
    f, base = steps[key]["first"], steps.get((key[0], key[1], "skipgrad"))
    def rel(k):
        a, b = f.get(k), base["first"].get(k) if base else None
        ok = key[2] != "skipgrad" and None not in (a, b) and a == a and b == b and b != 0
        return f"{abs(a - b) / abs(b):.1e}" if ok else "–"
    print(f"| {key[0]} | {key[1]} | {key[2]} | {num(f.get('loss_initial'), '.6f')} | {rel('loss_initial')} | "
          f"{num(f.get('loss_after_update'), '.6f')} | {rel('loss_after_update')} |")
print("\nWhere the time goes: device ms of each phase of a step (medians over runs of each run's median; one phase at "
      "a time, waiting after each, so they add up to a little more than ms/step):\n")
print("| topology | precision | framework | forward + loss | backward | optimizer update + zero_grad |")
print("|---|---|---|---|---|---|")
for key in sorted(order, key=lambda k: (k[0], k[1], k[2] != "skipgrad")):
    s = steps[key]
    cell = lambda v: f"{pct(v, 0.5):.2f}" if v else "–"
    print(f"| {key[0]} | {key[1]} | {key[2]} | {cell(s['fwd'])} | {cell(s['bwd'])} | {cell(s['upd'])} |")
fused = {(r["topology"], r["precision"]): (r["fused_bias_gemms"], r["unfused_bias_gemms"]) for r in rows
         if r["kind"] == "step" and r["framework"] == "skipgrad" and r.get("fused_bias_gemms") is not None}
if fused:
    print("\nskipgrad's linear-layer GEMMs per step with the bias in a cuBLASLt epilogue / declined by cuBLASLt: " +
          ", ".join(f"{t} {p} {f:.0f} / {u:.0f}" for (t, p), (f, u) in fused.items()))
errors = [f"- FAILED: {r['framework']} {r['topology']} {r['precision']}: {r['error']}" for r in rows if r["kind"] == "error"]
if errors:
    print("\n" + "\n".join(errors))
runs = {fw: sum(1 for r in rows if r["kind"] == "device" and r["framework"] == fw) for fw in dev}
print(f"\nms/step pools every round of every run ({', '.join(f'{k}: {v} runs' for k, v in runs.items())}); "
      "time / skipgrad's > 1: skipgrad is faster.")
profiles = sorted(glob.glob(os.path.join(sys.argv[2], "profile_*.txt")))
if profiles:
    print("\nskipgrad's profile of one step (autograd/profiler.h; the 8 ops with the most device time; whole tables "
          "and Chrome traces in profiles/):")
for path in profiles:
    lines = open(path).read().splitlines()
    print(f"\n{os.path.basename(path)[8:-4]}: {lines[0]}\n```\n" + "\n".join(lines[2:11]) + "\n```")
EOF
}

round_s=0
for ((r = 0; r < ROUNDS; r++)); do
  if [[ -n ${DEADLINE_S:-} ]] && ((r > 0 && SECONDS + round_s > DEADLINE_S)); then
    log "round $((r + 1))/$ROUNDS not started: the last took ${round_s} s, ${SECONDS} s of DEADLINE_S=$DEADLINE_S gone"
    break
  fi
  log "round $((r + 1))/$ROUNDS (${SECONDS}s)"
  t0=$SECONDS
  profile=()
  ((r > 0)) || [[ ${PROFILE:-1} == 0 ]] || profile=(--profile "$LOG_DIR/profiles")
  if ((r % 2 == 0)); then run_skipgrad "${profile[@]}"; run_pytorch "${profile[@]}"; else run_pytorch; run_skipgrad; fi
  round_s=$((SECONDS - t0))
  write_table || log "the table could not be written (runs.jsonl kept)"
done
cat "$LOG_DIR/table.md"
grep -q '"framework": "pytorch"' "$LOG_DIR/runs.jsonl" || log "no PyTorch rows: see $LOG_DIR/stderr.log"

