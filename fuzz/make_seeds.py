#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/: a few small valid and invalid inputs per parser.
Run from anywhere: python3 fuzz/make_seeds.py (the files are committed; rerun only to change them)."""
import json, os, struct

here = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    path = os.path.join(here, "corpus", target, name)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def fnv1a64(b):
    h = 0xcbf29ce484222325
    for c in b:
        h = ((h ^ c) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def safetensors(tensors, meta=None, checksum=True, pad=True):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    meta = dict(meta or {})
    if checksum:
        meta["skipgrad.checksum"] = "%016x" % fnv1a64(data)
    if meta:
        header["__metadata__"] = meta
    if checksum:  # of the header as nlohmann dumps it (keys sorted, no spaces), without this entry
        dumped = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        meta["skipgrad.header_checksum"] = "%016x" % fnv1a64(dumped)
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


f32 = lambda *v: struct.pack("<%df" % len(v), *v)
# ---- safetensors: valid ----
put("safetensors", "one_f32.st", safetensors([("w", "F32", [2, 3], f32(1, 2, 3, 4, 5, 6))]))
put("safetensors", "mixed.st", safetensors([
    ("enc.0.weight", "F32", [2, 2], f32(1, -1, 0.5, 2)),
    ("step", "I64", [], struct.pack("<q", 7)),
    ("ids", "I32", [3], struct.pack("<3i", 1, 2, 3)),
    ("x", "F64", [1], struct.pack("<d", 3.25)),
    ("empty", "F32", [0, 4], b""),
], meta={"config": "{\"d_model\": 8}", "skipgrad.optim.step": "3"}))
put("safetensors", "no_checksum.st", safetensors([("b", "F32", [1], f32(9))], checksum=False))
put("safetensors", "only_metadata.st", safetensors([], meta={"k": "v"}))
# ---- safetensors: invalid ----
good = safetensors([("w", "F32", [2], f32(1, 2))])
put("safetensors", "truncated.st", good[:-3])
put("safetensors", "short.st", b"\x05\x00\x00")
put("safetensors", "bad_checksum.st", good[:-1] + b"\x01")
put("safetensors", "huge_header_len.st", struct.pack("<Q", 1 << 62) + b"{}")
put("safetensors", "overlap.st", safetensors([("a", "F32", [1], f32(1)), ("b", "F32", [1], f32(2))], checksum=False)
    .replace(b"[4,8]", b"[0,4]"))
put("safetensors", "bad_dtype.st", safetensors([("h", "F16", [2], b"\0" * 4)], checksum=False))
put("safetensors", "zero_dim_huge_strides.st", safetensors([("a", "F32", [0, 1 << 40, 1 << 40], b"")], checksum=False,
                                                       pad=False))
put("safetensors", "not_json.st", struct.pack("<Q", 8) + b"{\"a\":[1,")

# ---- TSV ----
put("tsv", "valid.tsv", "ein hund\ta dog\nzwei  katzen \t two cats\r\n\ndrei\tthree\n")
put("tsv", "bad_lines.tsv", b"no tab here\n\tempty source\nempty target\t\na\tb\tc\nbad \xff utf8\tx\nok\tfine\n")
put("tsv", "utf8.tsv", "Grüße\tgreetings\nStraße\tstreet\n日本\tJapan\n")
put("tsv", "no_newline.tsv", "last\tline")

# ---- graph JSON (the format Graph::to_json writes) ----
def node(i, kind, op, name, inputs=(), **kw):
    n = {"id": i, "tape_id": -1 if kind != "op" else i, "kind": kind, "op": op,
         "family": "leaf" if kind != "op" else kw.get("family", "elementwise"), "role": "Other", "name": name,
         "scope": name.rpartition(".")[0], "shape": [2, 3], "dtype": "float32", "requires_grad": kind != "input",
         "inputs": list(inputs), "params": kw.get("params", {}), "saved_bytes": kw.get("saved", 0),
         "value_norm": kw.get("value_norm", 1.5), "grad_norm": kw.get("grad_norm", None)}
    return n

graph = {"format": "skipgrad-graph", "version": 1, "nodes": [
    node(0, "input", "input", "input"),
    node(1, "param", "param", "enc.0.w", value_norm=2.0, grad_norm=0.25),
    node(2, "op", "mul", "enc.0.mul", [0, 1], saved=48),
    node(3, "op", "add", "enc.0.residual_add", [2, 0], grad_norm="NaN"),
    node(4, "op", "layer_norm", "enc.0.norm.layer_norm", [3], family="norm", params={"eps": "1e-05"},
         value_norm="Infinity"),
], "params": [{"name": "enc.0.w", "node": 1, "shape": [2, 3], "dtype": "float32", "numel": 6, "value_norm": 2.0,
               "grad_norm": None}]}
put("graph_json", "valid.json", json.dumps(graph))
put("graph_json", "empty_graph.json", '{"format": "skipgrad-graph", "version": 1, "nodes": [], "params": []}')
bad = json.loads(json.dumps(graph)); bad["nodes"][2]["inputs"] = [0, 7]
put("graph_json", "forward_input.json", json.dumps(bad))
bad = json.loads(json.dumps(graph)); bad["params"][0]["node"] = 2
put("graph_json", "param_not_param.json", json.dumps(bad))
put("graph_json", "wrong_version.json", '{"format": "skipgrad-graph", "version": 2, "nodes": [], "params": []}')
put("graph_json", "truncated.json", json.dumps(graph)[:200])
bad = json.loads(json.dumps(graph)); bad["nodes"][2]["scope"] = "nullenc.0"  # longer than the name: to_dot threw
put("graph_json", "scope_not_prefix.json", json.dumps(bad))

# ---- model config JSON (what translate::config_to_json writes) ----
config = {"vocab": 64, "d_model": 16, "heads": 2, "d_ff": 32, "enc_layers": 2, "dec_layers": 2, "dropout": 0.1,
          "attn_dropout": 0.0, "act_dropout": 0.0, "norm": "layer_norm", "norm_eps": 1e-5, "activation": "relu",
          "topology": "pre_ln", "qk_norm": "none", "qk_norm_kind": "layer_norm", "resi_dual_scale": 1.0,
          "mixln_post_layers": -1, "init": "fairseq", "share_embeddings": True, "tie_output": True,
          "max_positions": 128, "pad_id": 0}
put("config_json", "valid.json", json.dumps(config))
bad = dict(config); del bad["heads"]
put("config_json", "missing_field.json", json.dumps(bad))
bad = dict(config); bad["d_model"] = 15
put("config_json", "heads_not_divisor.json", json.dumps(bad))
bad = dict(config); bad["vocab"] = "64"
put("config_json", "mistyped.json", json.dumps(bad))
bad = dict(config); bad["vocab"] = 1e300
put("config_json", "huge_float.json", json.dumps(bad))
put("config_json", "not_json.json", '{"vocab": 64,')
