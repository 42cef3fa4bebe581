#!/usr/bin/env python3
"""Writes tests/reference/significance_reference.json: sacreBLEU's paired bootstrap resampling (`--paired-bs`) and
paired approximate randomization (`--paired-ar`) of three systems against a baseline, the independent reference
for examples/translate/significance.cpp.

The file holds the resamples' indices and the randomization's coin flips (numpy's, drawn exactly as sacreBLEU's
_paired_bs_test and _paired_ar_test draw them from the seed) and sacreBLEU's results for them: each system's BLEU,
bootstrap mean, 95% interval and p-value, and the randomization's p-value. The script computes the results twice,
through sacreBLEU's test functions themselves and through their pieces with the stored draws, and refuses to write
unless both agree, so the stored draws are the ones sacreBLEU used.
Usage: pip install sacrebleu numpy && python3 scripts/make_significance_reference.py"""
import json, os, random

import numpy as np
import sacrebleu
from sacrebleu.metrics import BLEU
from sacrebleu.significance import _compute_p_value, _paired_ar_test, _paired_bs_test, estimate_ci

random.seed(11)
words = ("the a one two three four five hundred thousand and cat dog sat on mat ran fast slow house , . "
         "ninety-one forty-two").split()
N, SAMPLES, SEED = 60, 300, 12345


def sentence():
    return " ".join(random.choice(words) for _ in range(random.randint(3, 14)))


def corrupt(ref, keep):
    """The reference with each word kept with probability `keep`, else replaced by a random word."""
    return " ".join(w if random.random() < keep else random.choice(words) for w in ref.split())


refs = [sentence() for _ in range(N)]
systems = {"baseline": [corrupt(r, 0.70) for r in refs],
           "better": [corrupt(r, 0.85) for r in refs],
           "alike": [corrupt(r, 0.70) for r in refs],
           "worse": [corrupt(r, 0.55) for r in refs]}
names = list(systems)

metric = BLEU()
stats = {n: np.array(metric._extract_corpus_statistics(systems[n], [refs]), dtype="float32") for n in names}
scores = {n: metric._aggregate_and_compute(metric._extract_corpus_statistics(systems[n], [refs])).score
          for n in names}
idxs = np.random.default_rng(SEED).choice(N, size=(SAMPLES, N), replace=True)  # as _paired_bs_test draws them
resampled = {n: np.array([metric._compute_score_from_stats(s.sum(0)).score for s in stats[n][idxs]]) for n in names}

# sacreBLEU sums the statistics in float32 and computes each resample's BLEU from those float32 numbers, which moves
# it by up to ~3e-6 from the exact value; the same in float64 ("mean_f64", "ci_f64") is what exact arithmetic gives.
resampled_f64 = {n: np.array([metric._compute_score_from_stats(s.sum(0)).score
                              for s in stats[n].astype("float64")[idxs]]) for n in names}

results = []
for n in names:
    mean, ci = estimate_ci(resampled[n])
    mean64, ci64 = estimate_ci(resampled_f64[n])
    entry = {"name": n, "bleu": scores[n], "mean": float(mean), "ci": float(ci), "p_value": None,
             "mean_f64": float(mean64), "ci_f64": float(ci64), "p_value_f64": None}
    if n != "baseline":
        d = abs(scores["baseline"] - scores[n])
        diffs = np.abs(resampled[n] - resampled["baseline"])
        entry["p_value"] = _compute_p_value(diffs - diffs.mean(), d)
        diffs = np.abs(resampled_f64[n] - resampled_f64["baseline"])
        entry["p_value_f64"] = _compute_p_value(diffs - diffs.mean(), d)
    results.append(entry)

# sacreBLEU's own test from the same seed must give the same numbers: then idxs are its resamples
base_info = {"BLEU": (metric._extract_corpus_statistics(systems["baseline"], [refs]),
                      metric._aggregate_and_compute(metric._extract_corpus_statistics(systems["baseline"], [refs])))}
for entry in results[1:]:
    _, res = _paired_bs_test(base_info, entry["name"], systems[entry["name"]], [refs], {"BLEU": metric},
                             n_samples=SAMPLES, seed=SEED)
    r = res["BLEU"]
    assert abs(r.score - entry["bleu"]) < 1e-12 and abs(r.mean - entry["mean"]) < 1e-9, (r, entry)
    assert abs(r.ci - entry["ci"]) < 1e-9 and abs(r.p_value - entry["p_value"]) < 1e-12, (r, entry)

# Paired approximate randomization (--paired-ar): the coin flips numpy draws for sacreBLEU's _paired_ar_test from
# the seed (True: the sentence's baseline statistics go to pseudo-system a), and sacreBLEU's p-values for them.
AR_TRIALS = 500
flips = np.random.default_rng(SEED).integers(2, size=(AR_TRIALS, N), dtype=bool)  # as _paired_ar_test draws them
ar = []
for entry in results[1:]:
    n = entry["name"]
    bl, sy = np.array(stats["baseline"], dtype="int64"), np.array(stats[n], dtype="int64")
    a, b = flips @ bl + ~flips @ sy, ~flips @ bl + flips @ sy
    d = np.abs(np.array([metric._compute_score_from_stats(x).score for x in a]) -
               np.array([metric._compute_score_from_stats(x).score for x in b]))
    p = _compute_p_value(d, abs(scores["baseline"] - scores[n]))
    _, res = _paired_ar_test(base_info, n, systems[n], [refs], {"BLEU": metric}, n_samples=AR_TRIALS, seed=SEED)
    assert abs(res["BLEU"].p_value - p) < 1e-12, (res["BLEU"], p)
    ar.append({"name": n, "p_value": p})

out = os.path.join(os.path.dirname(__file__), "..", "tests", "reference", "significance_reference.json")
with open(out, "w") as f:
    json.dump({"sacrebleu": sacrebleu.__version__, "numpy": np.__version__, "seed": SEED, "references": refs,
               "systems": [{"name": n, "hypotheses": systems[n]} for n in names],
               "resamples": idxs.tolist(), "results": results,
               "ar_flips": ["".join("1" if x else "0" for x in row) for row in flips], "ar_results": ar},
              f, ensure_ascii=False)
print("wrote", out, "BLEU", [round(e["bleu"], 2) for e in results], "p", [e["p_value"] for e in results],
      "AR p", [e["p_value"] for e in ar])
