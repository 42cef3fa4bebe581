#!/usr/bin/env python3
"""PyTorch's side of the issue-6 GPU benchmark (docs/cuda_benchmark.md): bench/pytorch_step.py's model (nn.Linear,
nn.LayerNorm, nn.Embedding, F.scaled_dot_product_attention, F.cross_entropy with label smoothing; parameter names
are skipgrad's) at the sizes of issue 6, eager, Adam(fused=True), timed like bench/cuda_step.cpp, printing the same
JSON fields. scripts/bench_cuda.sh runs it in turn with cuda_step.

  pytorch_cuda_step.py [--topologies post_ln,pre_ln] [--precision fp32,tf32,bf16] [--warmup 5] [--rounds 5]
                       [--steps 10] [--weights-dir DIR] [--json] [--device cuda|cpu] [--shape key=value,...]
                       [--profile DIR] [--positions sinusoidal|rope|alibi|t5] [--norm layer_norm|dyt]

What is measured, per (topology, precision), as in cuda_step.cpp:
  - precision fp32: torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False; tf32: True;
    bf16: PyTorch's bf16 mixed precision, the forward under torch.autocast("cuda", dtype=torch.bfloat16) (bf16
    matrix products and their outputs, fp32 weights; skipgrad's bf16 is its AutocastBF16, the same policy).
  - a step = zero_grad, forward, loss, backward, Adam step; the loss is read (a host sync) only in warm-up and
    once after each round.
  - ms/step: torch.cuda.Event pairs on the current stream around each of `rounds` rounds of `steps` steps; a round
    gives one sample (elapsed / steps). host_ms: the host's wall time to queue a round's steps, per step.
  - loss_initial / loss_after_update: the first and second warm-up steps' losses; with --weights-dir the weights
    and batch come from DIR/weights_<topology>[_<positions>][_dyt].safetensors written by cuda_step (the positions'
    suffix unless sinusoidal), so they must equal skipgrad's.
  - --norm dyt puts DyT (pytorch_step.py's, the authors' module) in every norm's place, as cuda_step --norm dyt.
  - peak_alloc_mib: torch.cuda.max_memory_allocated since the configuration began (reset_peak_memory_stats after
    freeing the previous one); peak_reserved_mib: max_memory_reserved; device_used_mib: total - free
    (torch.cuda.mem_get_info) after the rounds, the process's footprint with the CUDA context and the cache.
  - TFLOP/s and tokens/s are computed by scripts/bench_cuda.sh from cuda_step's analytic FLOPs (same model).
  - with --profile DIR, one more step under torch.profiler after the timed ones, as cuda_step --profile:
    DIR/pytorch_profile_<topology>_<precision>.txt (key_averages, by device time on a GPU, else CPU time) and
    .trace.json (its Chrome trace). A profiler that fails (no CUPTI) is reported on stderr; the figures stand.
--device cpu with a tiny --shape is a smoke test without a GPU (host clock). Without a CUDA device (and --device
cuda) it prints "pytorch_cuda_step: skipped: no CUDA device" and exits 0. A configuration that raises is reported
(a JSON line "kind": "error") and the others still run; the exit status is then 1.
"""
import argparse
import gc
import json
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import torch
    import pytorch_step as ps
except Exception as e:  # the benchmark goes on with skipgrad alone
    print(f"pytorch_cuda_step: skipped: cannot import torch ({e})", flush=True)
    print(f"pytorch_cuda_step: skipped: cannot import torch ({e})", file=sys.stderr, flush=True)
    sys.exit(0)

ISSUE6 = dict(batch=64, src_len=64, tgt_len=64, vocab=8000, d_model=512, heads=8, d_ff=2048, layers=6)
MIB = 1024.0 * 1024.0


def parse_shape(spec):
    shape = dict(ISSUE6)
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key not in shape or not value:
            raise SystemExit(f"pytorch_cuda_step: bad --shape item {item!r} (keys: {', '.join(shape)})")
        shape[key] = int(value)
    if shape["src_len"] != shape["tgt_len"]:
        print("pytorch_cuda_step: src_len != tgt_len needs --weights-dir (random batches are square)", file=sys.stderr)
    return shape


def set_tf32(on):
    with warnings.catch_warnings():  # newer torch suggests its fp32_precision API; the flags still decide
        warnings.simplefilter("ignore")
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
        return torch.backends.cuda.matmul.allow_tf32


def quartiles(v):
    if len(v) < 2:
        return v[0], v[0]
    q = statistics.quantiles(v, n=4, method="inclusive")  # numpy's default, as bench::summarize
    return q[0], q[2]


def autocast_bf16(fn):
    def run(*batch):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return fn(*batch).float()
    return run


def phases(r, steps, cuda):
    """Medians over `steps` extra steps of the device time of the forward with the loss, the backward, and the
    optimizer update with zeroing the gradients (as cuda_step times them: one phase at a time, waiting after each)."""
    times = dict(forward_ms=[], backward_ms=[], update_ms=[])

    def timed(name, fn):
        if cuda:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            stop.record()
            stop.synchronize()
            times[name].append(start.elapsed_time(stop))
        else:
            t0 = time.perf_counter()
            out = fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
        return out

    for _ in range(steps):
        loss = timed("forward_ms", lambda: r.fn(*r.batch))
        timed("backward_ms", loss.backward)
        timed("update_ms", lambda: (r.opt.step(), r.opt.zero_grad()))
    return {k: statistics.median(v) for k, v in times.items()}


def profile_step(r, out_dir, name, cuda):
    """One step under torch.profiler: its ops by time (device time on a GPU) and a Chrome trace, in out_dir."""
    try:
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=acts, profile_memory=True) as prof:
            r.step(read_loss=False)
            if cuda:
                torch.cuda.synchronize()
        os.makedirs(out_dir, exist_ok=True)
        base = os.path.join(out_dir, f"pytorch_profile_{name}")
        table = None
        for key in (["device_time_total", "cuda_time_total"] if cuda else ["cpu_time_total"]):  # newer, older torch
            try:
                table = prof.key_averages().table(sort_by=key, row_limit=40)
                break
            except (AttributeError, KeyError, ValueError):
                continue
        if table is None:
            raise RuntimeError("key_averages().table sorts by neither device_time_total nor cuda_time_total")
        with open(base + ".txt.tmp", "w") as f:
            f.write(table + "\n")
        os.replace(base + ".txt.tmp", base + ".txt")
        prof.export_chrome_trace(base + ".trace.json")
    except Exception as e:  # the profile is a diagnostic: the benchmark's figures do not depend on it
        print(f"pytorch_cuda_step: the profile of {name} failed: {e}", file=sys.stderr)


def run_config(args, shape, device, topology, precision):
    cuda = device == "cuda"
    res = dict(kind="step", framework=f"pytorch-{torch.__version__.split('+')[0]}", topology=topology,
               norm=ps.NORM, precision=precision)
    if cuda:
        res["allow_tf32"] = set_tf32(precision == "tf32")
        res["autocast"] = "bfloat16" if precision == "bf16" else None
        gc.collect()
        torch.cuda.empty_cache()  # the previous configuration's blocks: device_used_mib is this one's footprint
        torch.cuda.reset_peak_memory_stats()
    suffix = ("" if ps.POSITIONS == "sinusoidal" else "_" + ps.POSITIONS) + ("_dyt" if ps.NORM == "dyt" else "")
    weights = os.path.join(args.weights_dir, f"weights_{topology}{suffix}.safetensors") if args.weights_dir else ""
    if weights and not os.path.exists(weights):
        print(f"pytorch_cuda_step: {weights} is missing: random weights, losses not comparable", file=sys.stderr)
        weights = ""
    r = ps.Runner(topology, "eager", weights, device, (shape["batch"], shape["tgt_len"]))
    if precision == "bf16":
        r.fn = autocast_bf16(r.fn)
    res["params"] = sum(p.numel() for p in r.model.parameters())
    res["adam"] = r.adam
    warm = [r.step() for _ in range(max(args.warmup, 2))]
    res.update(warmup=len(warm), steps_per_round=args.steps, loss_initial=warm[0], loss_after_update=warm[1])
    start, stop = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) if cuda else (0, 0)
    round_ms, host_ms, last = [], [], None
    for _ in range(args.rounds):
        if cuda:
            start.record()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            last = r.step(read_loss=False)
        host = (time.perf_counter() - t0) * 1e3
        if cuda:
            stop.record()
            stop.synchronize()
            round_ms.append(start.elapsed_time(stop) / args.steps)
        else:  # the CPU's ops have finished when they return
            round_ms.append(host / args.steps)
        host_ms.append(host / args.steps)
    res["loss_final"] = last.item()
    res.update(phases(r, max(args.steps, 3), cuda))
    if args.profile:
        profile_step(r, args.profile, f"{topology}_{precision}", cuda)
    p25, p75 = quartiles(round_ms)
    res.update(round_ms=round_ms, host_ms=statistics.median(host_ms), ms_median=statistics.median(round_ms),
               ms_p25=p25, ms_p75=p75, ms_min=min(round_ms), ms_max=max(round_ms))
    if cuda:
        free, total = torch.cuda.mem_get_info()
        res.update(peak_alloc_mib=torch.cuda.max_memory_allocated() / MIB,
                   peak_reserved_mib=torch.cuda.max_memory_reserved() / MIB, device_used_mib=(total - free) / MIB)
    else:
        res.update(peak_alloc_mib=None, device_used_mib=None)
    del r, last
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topologies", default="post_ln,pre_ln")
    p.add_argument("--precision", default="fp32,tf32")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--weights-dir", default="")
    p.add_argument("--profile", default="", help="profile one more step per configuration into this folder")
    p.add_argument("--json", action="store_true")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--shape", default="", help="key=value,... over " + ",".join(f"{k}={v}" for k, v in ISSUE6.items()))
    p.add_argument("--positions", default="sinusoidal", choices=["sinusoidal", "rope", "alibi", "t5"],
                   help="the model's position encoding (pytorch_step.py's POSITIONS), as cuda_step --positions")
    p.add_argument("--norm", default="layer_norm", choices=["layer_norm", "dyt"],
                   help="every norm's kind (pytorch_step.py's NORM), as cuda_step --norm")
    args = p.parse_args()
    ps.POSITIONS, ps.NORM = args.positions, args.norm
    if args.device == "cuda" and not torch.cuda.is_available():
        print("pytorch_cuda_step: skipped: no CUDA device", flush=True)
        return 0
    precisions = [x for x in args.precision.split(",") if x]
    if any(x not in ("fp32", "tf32", "bf16") or (x != "fp32" and args.device != "cuda") for x in precisions):
        raise SystemExit(f"pytorch_cuda_step: --precision {args.precision}: fp32, tf32 or bf16 (tf32 and bf16 on "
                         "cuda only)")
    shape = parse_shape(args.shape)
    ps.set_sizes(shape["vocab"], shape["d_model"], shape["heads"], shape["d_ff"], shape["layers"])
    human = sys.stderr if args.json else sys.stdout
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        device = f"{props.name}, {props.multi_processor_count} SMs, {props.total_memory // (1 << 20)} MiB"
    else:
        device = f"cpu ({torch.get_num_threads()} threads)"
    info = dict(kind="device", framework=f"pytorch-{torch.__version__.split('+')[0]}", device=device,
                torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    if args.json:
        print(json.dumps(info), flush=True)
    print(f"# PyTorch {torch.__version__} on {device}", file=human, flush=True)
    failed = False
    for topology in filter(None, args.topologies.split(",")):
        for precision in precisions:
            print(f"# {topology} {precision} ...", file=human, flush=True)
            try:
                res = run_config(args, shape, args.device, topology, precision)
            except Exception as e:  # reported; the other configurations still run
                failed = True
                err = dict(kind="error", framework=info["framework"], topology=topology, precision=precision,
                           error=f"{type(e).__name__}: {e}")
                print(json.dumps(err) if args.json else f"{topology} {precision}: FAILED: {err['error']}", flush=True)
                continue
            if args.json:
                print(json.dumps(res), flush=True)
            norm = "" if ps.NORM == "layer_norm" else f" with {ps.NORM}"
            print(f"{topology}{norm} {precision}: {res['ms_median']:.2f} ms/step "
                  f"[{res['ms_p25']:.2f}-{res['ms_p75']:.2f}] "
                  f"(host {res['host_ms']:.2f}), peak {res['peak_alloc_mib'] or float('nan'):.0f} MiB, loss "
                  f"{res['loss_initial']:.6f} -> {res['loss_after_update']:.6f} -> {res['loss_final']:.6f}",
                  file=human, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
