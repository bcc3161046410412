#!/usr/bin/env python3
"""Writes a small .safetensors file for `examples/attn-demo --weights` (Python 3 standard library only).

    python3 examples/make_demo_weights.py -o demo.safetensors
    examples/attn-demo --weights demo.safetensors "I love tennis"

The file holds what attn-demo reads: an embedding table "embed" [vocab][d_model], the vocabulary in __metadata__
"vocab" (one token per line, "<unk>" last), "n_heads", and one PyTorch MultiheadAttention layer: in_proj_weight
[3*d_model][d_model], in_proj_bias [3*d_model], out_proj.weight [d_model][d_model], out_proj.bias [d_model].

It is built by hand, not trained, so that its heads show something readable. Every word belongs to a class
(pronoun, verb, noun, ...); its embedding is 3 times the class's coordinate axis plus seeded noise. Each head's
query and key rows then hold rules "class A attends to class B": head 0 looks from a subject to its verb, from a
verb to its object and from a noun back to its verb; head 1 from a verb back to its subject and from a noun to its
article or adjective. Further heads, the value and output projections and the small noise everywhere are seeded
random (uniform in +-1/sqrt(fan_in), like nn.Linear), so the same --seed gives the same file.
"""
import argparse
import json
import math
import random
import struct
import sys

CLASSES = {
    "pronoun": "i you he she it we they me him her us them",
    "verb": "love loves like likes hate hates play plays watch watches eat eats see sees read reads is are",
    "noun": "tennis football music chess cat cats dog dogs book books pizza coffee games movies",
    "article": "the a an my your his their this that",
    "adjective": "good great bad big small red happy new old",
    "conjunction": "and but or not very really too also",
    "punctuation": ". , ! ? ; :",
    "other": "<unk>",
}
CLASS_INDEX = {c: i for i, c in enumerate(CLASSES)}

# (attending class, attended class) per head: the query of an attending word matches the key of an attended one.
RULES = [
    [("pronoun", "verb"), ("verb", "noun"), ("noun", "verb"), ("article", "noun"), ("adjective", "noun"),
     ("punctuation", "verb")],
    [("verb", "pronoun"), ("noun", "article"), ("noun", "adjective"), ("pronoun", "pronoun"),
     ("conjunction", "verb"), ("punctuation", "punctuation")],
]
AXIS = 3.0       # length of a word's class component
NOISE = 0.3      # standard deviation of the rest of its embedding
STRENGTH = 8.0   # a matching (query, key) pair scores STRENGTH / sqrt(head_dim) above the others


def to_bytes(values, dtype):
    """Little-endian bytes of a flat list of floats as F32, F16 or BF16 (rounded to nearest even)."""
    if dtype == "F32":
        return struct.pack("<%df" % len(values), *values)
    if dtype == "F16":
        return struct.pack("<%de" % len(values), *values)
    out = bytearray()
    for v in values:
        bits = struct.unpack("<I", struct.pack("<f", v))[0]
        bits += 0x7FFF + ((bits >> 16) & 1)
        out += struct.pack("<H", (bits >> 16) & 0xFFFF)
    return bytes(out)


def write_safetensors(path, tensors, metadata):
    """tensors: (name, dtype, shape, flat values) in file order; metadata: str -> str."""
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, dtype, shape, values in tensors:
        blob = to_bytes(values, dtype)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def main():
    ap = argparse.ArgumentParser(description="Write a demo .safetensors file for attn-demo --weights.")
    ap.add_argument("-o", "--output", default="demo.safetensors", help="file to write (default demo.safetensors)")
    ap.add_argument("--d-model", type=int, default=16, help="embedding width (default 16, at least %d)" %
                    len(CLASSES))
    ap.add_argument("--heads", type=int, default=2, help="attention heads, must divide d_model (default 2)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the noise and random weights (default 1)")
    ap.add_argument("--dtype", choices=["F32", "F16", "BF16"], default="F32", help="tensor dtype (default F32)")
    ap.add_argument("--no-bias", action="store_true", help="leave out in_proj_bias and out_proj.bias")
    a = ap.parse_args()

    d, h = a.d_model, a.heads
    if d < len(CLASSES) or h < 1 or d % h:
        sys.exit("make_demo_weights: --d-model must be >= %d and a multiple of --heads" % len(CLASSES))
    hd = d // h
    if any(len(RULES[i]) > hd for i in range(min(h, len(RULES)))):
        sys.exit("make_demo_weights: head_dim (d_model / heads) must be >= %d" % max(len(r) for r in RULES))
    rnd = random.Random(a.seed)

    def uniform(n, fan_in):
        b = 1.0 / math.sqrt(fan_in)
        return [rnd.uniform(-b, b) for _ in range(n)]

    vocab, embed = [], []
    for cls, words in CLASSES.items():
        for w in words.split():
            vec = [rnd.gauss(0.0, NOISE) for _ in range(d)]
            vec[CLASS_INDEX[cls]] += AXIS
            vocab.append(w)
            embed += vec

    # in_proj_weight = cat(Wq, Wk, Wv), each [d][d]: small random weights, then the rules on top.
    wq = [x * 0.1 for x in uniform(d * d, d)]
    wk = [x * 0.1 for x in uniform(d * d, d)]
    wv = uniform(d * d, d)
    for head, rules in enumerate(RULES[:h]):
        for r, (src, dst) in enumerate(rules):
            row = head * hd + r
            wq[row * d + CLASS_INDEX[src]] += STRENGTH / AXIS
            wk[row * d + CLASS_INDEX[dst]] += 1.0 / AXIS
    tensors = [
        ("embed", a.dtype, [len(vocab), d], embed),
        ("in_proj_weight", a.dtype, [3 * d, d], wq + wk + wv),
        ("out_proj.weight", a.dtype, [d, d], uniform(d * d, d)),
    ]
    if not a.no_bias:
        tensors.insert(2, ("in_proj_bias", a.dtype, [3 * d], [rnd.uniform(-0.01, 0.01) for _ in range(3 * d)]))
        tensors.append(("out_proj.bias", a.dtype, [d], [rnd.uniform(-0.01, 0.01) for _ in range(d)]))
    write_safetensors(a.output, tensors, {
        "vocab": "\n".join(vocab),
        "n_heads": str(h),
        "description": "attn-demo weights from examples/make_demo_weights.py --seed %d (hand-built, not trained)"
                       % a.seed,
    })
    print("%s: %d-token vocabulary, d_model %d, %d heads, %s" % (a.output, len(vocab), d, h, a.dtype))


if __name__ == "__main__":
    main()
