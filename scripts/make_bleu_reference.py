#!/usr/bin/env python3
"""Writes tests/reference/bleu_reference.json: corpus BLEU of several hypothesis/reference sets by sacreBLEU
(default settings: 13a tokenisation, exp smoothing), the independent reference for examples/translate/bleu.cpp.
Usage: pip install sacrebleu && python3 scripts/make_bleu_reference.py"""
import json, os, random
import sacrebleu

random.seed(7)
words = "the a cat dog sat on mat ran fast slow house , . ! ? 's - 1,000 3.5 U.S. e-mail don't (quoted) \"x\" & < >".split()

def sentence(n):
    return " ".join(random.choice(words) for _ in range(n))

cases = []
# hand-made cases: perfect, empty-ish, short (brevity penalty), zero 4-gram matches (smoothing), punctuation
cases.append({"hyp": ["the cat sat on the mat ."], "ref": ["the cat sat on the mat ."]})
cases.append({"hyp": ["the cat"], "ref": ["the cat sat on the mat ."]})
cases.append({"hyp": ["cat the mat on sat"], "ref": ["the cat sat on the mat"]})
cases.append({"hyp": ["Hello, world! It's 3.5 km (about 2 miles)."], "ref": ["Hello world! It is 3.5 km, about 2 miles."]})
cases.append({"hyp": ["ninety-one thousand four hundred thirty", "two"], "ref": ["ninety-one thousand four hundred thirty", "two"]})
cases.append({"hyp": ["a &amp; b &lt;c&gt;", "x"], "ref": ["a & b <c>", "y"]})
# no n-gram matches at all (sacreBLEU: 0, before smoothing), an empty reference, and the whitespace Python's
# str.split() knows beyond ASCII (no-break, thin and ideographic spaces, U+001C, U+0085)
cases.append({"hyp": ["a b c d"], "ref": ["e f g h"]})
cases.append({"hyp": ["a b c d", "x y"], "ref": ["", "z"]})
cases.append({"hyp": ["a\u00a0b c\u2009d e\u3000f", "g\x1ch i\x85j"], "ref": ["a b c d e f", "g h i j"]})
for _ in range(6):  # random corpora
    n = random.randint(3, 30)
    refs = [sentence(random.randint(1, 15)) for _ in range(n)]
    hyps = [" ".join(r.split()[: random.randint(0, len(r.split()))] + [random.choice(words)]) for r in refs]
    cases.append({"hyp": hyps, "ref": refs})
for c in cases:
    b = sacrebleu.corpus_bleu(c["hyp"], [c["ref"]])
    c["score"] = b.score
    c["precisions"] = list(b.precisions)
    c["bp"] = b.bp
    c["sys_len"] = b.sys_len
    c["ref_len"] = b.ref_len
out = os.path.join(os.path.dirname(__file__), "..", "tests", "reference", "bleu_reference.json")
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w") as f:
    json.dump({"sacrebleu": sacrebleu.__version__, "cases": cases}, f, indent=1, ensure_ascii=False)
print("wrote", out, len(cases), "cases")
