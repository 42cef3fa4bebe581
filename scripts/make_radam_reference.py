#!/usr/bin/env python3
"""Writes tests/reference/radam_reference.json: torch.optim.RAdam's parameters after each of 12 steps from given
gradients, the independent reference for nn::RAdam (nn/optim.h). Two cases: beta2 0.98 with L2 weight decay (torch
1.13's only kind) and beta2 0.999 without; float64, so the comparison is to rounding.
Usage: python3 scripts/make_radam_reference.py  (Debian's python3-torch, 1.13)"""
import json, os

import torch

torch.manual_seed(5)
cases = []
for name, betas, wd, lr in [("b098_wd", (0.9, 0.98), 0.01, 0.02), ("b0999", (0.9, 0.999), 0.0, 0.005)]:
    w = torch.randn(3, 4, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    start = {"w": w.flatten().tolist(), "b": b.tolist()}
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.RAdam([w, b], lr=lr, betas=betas, eps=1e-8, weight_decay=wd)
    steps = []
    for t in range(12):
        gw = torch.randn(3, 4, dtype=torch.float64) * (0.1 if t % 3 else 2.0)  # some steps much larger
        gb = torch.randn(4, dtype=torch.float64)
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        steps.append({"grad_w": gw.flatten().tolist(), "grad_b": gb.tolist(),
                      "w": w.detach().flatten().tolist(), "b": b.detach().tolist()})
    cases.append({"name": name, "lr": lr, "beta1": betas[0], "beta2": betas[1], "eps": 1e-8, "weight_decay": wd,
                  "start": start, "steps": steps})
out = os.path.join(os.path.dirname(__file__), "..", "tests", "reference", "radam_reference.json")
with open(out, "w") as f:
    json.dump({"torch": torch.__version__, "cases": cases}, f)
print("wrote", out)
