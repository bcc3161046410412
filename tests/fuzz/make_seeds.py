#!/usr/bin/python3
"""Writes the seed corpora of the libFuzzer targets in tests/fuzz (standard library only):

    python3 tests/fuzz/make_seeds.py        # rewrites tests/fuzz/corpus/{fuzz_api,fuzz_safetensors,fuzz_env,fuzz_pool}/

fuzz_api seeds follow the byte layout LLVMFuzzerTestOneInput in fuzz_api.c decodes (entry point, context, then the
fields in call order); fuzz_env seeds are a flag byte then NUL-separated values; fuzz_safetensors seeds are small
valid .safetensors files (F32/F16/BF16/I64 tensors, a 0-d and an empty tensor, metadata, a PyTorch
MultiheadAttention layer and a GQA layer with separate q/k/v/o_proj names). Deterministic: the same files every run.
"""

import json
import os
import random
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def write_corpus(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    for name, data in seeds:
        with open(os.path.join(d, name), "wb") as fp:
            fp.write(data)


# ---- fuzz_api ------------------------------------------------------------------------------------------------------

def size(v):
    """fz_size: 0..40 is one byte; 41..3040 is a byte in 205..239 then a little-endian u16 (value - 41)."""
    if v <= 40:
        return bytes([v])
    return bytes([205]) + struct.pack("<H", v - 41)


HUGE_SIZE_MAX = bytes([240])  # fz_size's table: SIZE_MAX
HUGE_2_62 = bytes([246])      # 2^62


def ctx(isa=0, threads=1, block=0, compare=0):
    """fz_pick_ctx: ISA index (among the supported ones), then thread count, block setting and the compare flag."""
    return bytes([isa, (threads - 1) | (block << 1) | (compare << 3)])


def sdpa(batch, heads, kv_div, q_len, kv_len, d, v_dim=0, layout=0, mask=0, window=0, probs=1, kv_valid=None,
         dtypes=None, positions=None, lse=0, mods=None, c=ctx()):
    b = bytes([1]) + c + size(batch) + size(heads)
    # fz_kv_heads: < 80 is 0 (= n_heads); 80..199 then a byte picks a divisor (1 + byte % n_heads, rounded down)
    b += bytes([0]) if kv_div == 0 else bytes([100, kv_div - 1])
    b += size(q_len) + size(kv_len) + size(d)
    b += bytes([0]) if v_dim == 0 else bytes([200]) + size(v_dim)
    b += bytes([layout])          # fz_enum_field
    b += bytes([0])               # scale 0: 1/sqrt(head_dim)
    b += bytes([mask])
    b += bytes([0]) if window == 0 else bytes([200]) + size(window)
    fl = (1 if probs else 0) | (0 if kv_valid is not None else 2)
    b += bytes([fl, 255, 0])      # flags, no NULL argument, magnitude 1
    if kv_valid is not None:
        b += bytes(kv_valid)
    if dtypes is not None:        # (q_dtype, kv_dtype, out_dtype, math) as fz_enum_field bytes
        b += bytes([128]) + bytes(dtypes)
    elif positions is not None or lse or mods is not None:
        b += bytes([0])
    if positions is not None:     # (positions, q_pos0, kv_pos0) as fz_pos bytes: below 200 the position itself,
        b += bytes([128 | lse]) + bytes(positions)  # 200.. its table (200: 2^32 + 3, 203: 2^62); bit 0: lse
    elif lse or mods is not None:
        b += bytes([lse])
    if mods is not None:          # flags (1 ALiBi, 2 sinks, 4 bias, 128 softcap), then the softcap table index
        b += bytes(mods)          # (1: 1, 2: 30, 5: -1 invalid) if 128, then the bias mode (0 full, 1 [q][kv], 2 row)
    return b


def kvcache(hk, hd, cap, dtype, ops, c=ctx()):
    b = bytes([2]) + c + size(hk) + size(hd) + bytes([0, cap - 1]) + bytes([dtype, 255, 0])
    for op in ops:
        if op[0] == "append":
            b += bytes([0, op[1], 255])
        elif op[0] == "reset":
            b += bytes([3])
        else:  # ("decode", q_len index byte, heads multiplier 1..4, mask)
            b += bytes([4, op[1], op[2] - 1, op[3], 255])
    return b


def linear(n, inf, outf, bias=1, ov=0, c=ctx()):
    return bytes([3]) + c + size(n) + size(inf) + size(outf) + bytes([bias, 255, ov, 0]) + (b"\x02" if ov >= 200 else b"")


def self_attention(n, dm, heads, kv_div, hd, mask, fl, c=ctx()):
    b = bytes([4]) + c + size(n) + size(dm) + size(heads)
    b += bytes([0]) if kv_div == 0 else bytes([100, kv_div - 1])
    b += size(hd) + bytes([mask, fl, 255, 0, 0])
    return b


def api_seeds():
    return [
        ("ctx_default", bytes([0, 0, 0, 0, 0, 255])),
        ("ctx_threads2_blocks", bytes([0, 4, 2, 15, 14, 255])),
        ("ctx_bad_threads", bytes([0, 8, 0, 0, 0, 255])),
        ("sdpa_gqa_causal_valid", sdpa(2, 4, 2, 3, 5, 8, mask=1, kv_valid=[5, 3], c=ctx(0, 1, 1, 1))),
        ("sdpa_bshd_window", sdpa(1, 2, 0, 6, 9, 5, v_dim=7, layout=1, mask=1, window=3, c=ctx(1, 2, 2, 1))),
        ("sdpa_split_kv", sdpa(1, 2, 1, 1, 1500, 16, probs=1, c=ctx(2, 1, 0, 1))),
        ("sdpa_q_longer", sdpa(1, 1, 0, 7, 3, 4, mask=1, c=ctx(3, 1, 1))),
        ("sdpa_bf16_math", sdpa(1, 2, 0, 5, 37, 24, mask=1, dtypes=(2, 2, 2, 1), c=ctx(3, 1, 0, 1))),
        ("sdpa_f16_in_bf16_out", sdpa(1, 4, 2, 3, 9, 7, layout=1, dtypes=(1, 1, 2, 0), c=ctx(2, 2, 1, 1))),
        ("sdpa_f32_bf16_math_valid", sdpa(2, 1, 0, 4, 6, 33, kv_valid=[6, 2], dtypes=(0, 0, 1, 1), c=ctx(1))),
        ("sdpa_decode_bf16_kv", sdpa(1, 2, 1, 1, 300, 16, probs=0, dtypes=(0, 2, 0, 1), c=ctx(3, 1, 0, 1))),
        ("sdpa_positions_lse", sdpa(1, 2, 0, 5, 40, 16, mask=1, window=9, positions=(1, 60, 30), lse=1,
                                    c=ctx(1, 1, 0, 1))),
        ("sdpa_positions_far", sdpa(2, 2, 1, 3, 300, 32, mask=1, positions=(1, 200, 150), lse=1,
                                    dtypes=(2, 2, 2, 1), c=ctx(3, 1, 0, 1))),
        ("sdpa_positions_range", sdpa(1, 1, 0, 2, 2, 4, positions=(1, 203, 0), lse=1)),
        ("sdpa_lse_split_kv", sdpa(1, 2, 1, 1, 1500, 16, mask=1, lse=1, c=ctx(2, 1, 0, 1))),
        ("sdpa_mods_all", sdpa(1, 4, 2, 7, 90, 16, mask=1, positions=(1, 100, 20), lse=1,
                               mods=(0x87, 2, 0), c=ctx(1, 1, 0, 1))),
        ("sdpa_mods_bf16_bcast", sdpa(2, 2, 0, 40, 70, 33, dtypes=(2, 2, 2, 1), lse=1, mods=(0x84, 1, 1),
                                      c=ctx(3, 2, 0, 1))),
        ("sdpa_mods_decode_sinks", sdpa(1, 8, 4, 1, 600, 32, mask=1, probs=1, mods=(0x03,), c=ctx(2, 1, 0, 1))),
        ("sdpa_bad_softcap", sdpa(1, 1, 0, 2, 2, 4, mods=(0x80, 5))),
        ("sdpa_bad_dtype", sdpa(1, 1, 0, 2, 2, 4, dtypes=(233, 0, 0, 0))),
        ("sdpa_bad_math", sdpa(1, 1, 0, 2, 2, 4, dtypes=(0, 0, 0, 233))),
        ("sdpa_overflow", bytes([1]) + ctx() + HUGE_SIZE_MAX + size(2) + bytes([0]) + size(3) + size(3) + size(4)
         + bytes([0, 0, 0, 0, 0, 1, 255, 0])),
        ("kv_f16_decode", kvcache(2, 8, 20, 1, [("append", 5), ("decode", 0, 2, 1), ("append", 3),
                                                ("decode", 3, 1, 0)], c=ctx(0, 1, 0, 1))),
        ("kv_bf16_reset", kvcache(1, 16, 10, 2, [("append", 4), ("reset",), ("append", 9), ("decode", 8, 4, 1)],
                                  c=ctx(2, 2, 1, 1))),
        ("kv_f32_full", kvcache(3, 5, 6, 0, [("append", 6), ("append", 1), ("decode", 5, 1, 1)])),
        ("linear_bias", linear(3, 5, 7, c=ctx(0, 1, 0, 1))),
        ("linear_adjacent", linear(4, 16, 33, ov=204, c=ctx(2, 2))),
        ("linear_overlap", linear(2, 3, 4, ov=207)),
        ("linear_overflow", bytes([3]) + ctx() + HUGE_2_62 + size(4) + size(4) + bytes([1, 255, 0, 0])),
        ("mha_causal_bias", self_attention(5, 12, 3, 0, 4, 1, 0b011110, c=ctx(0, 1, 0, 1))),
        ("mha_gqa_probs", self_attention(6, 16, 4, 2, 4, 0, 0b101110, c=ctx(2, 2, 2, 1))),
        ("mha_no_wo", self_attention(4, 8, 2, 0, 4, 1, 0b000001)),
    ]


# ---- fuzz_env ------------------------------------------------------------------------------------------------------

def env(unset, *values):
    return bytes([unset]) + b"\0".join(v.encode() for v in values)


def env_seeds():
    return [
        ("all_unset", env(0x1f)),
        ("valid_all", env(0, "2", "scalar", "64", "128", "0")),
        ("spaces_signs_verbose", env(0, " +3", "AVX2", "\t4096", "1", "1")),
        ("auto_mixed_case", env(0x04, "1024", "AuTo", "", "17", "0")),
        ("neon", env(0x18, "1", "neon")),
        ("bf16_levels", env(0x1d, "", "AVX512BF16", "", "", "", "neonbf16/generic")),
        ("amx", env(0x3d, "", "amx")),
        ("bad_values", env(0, "0", "sse", "4097", "-1", "2")),
        ("trailing_junk_verbose", env(0, "8 ", "avx512", "0x10", "99999999999999999999", "1")),
        ("verbose_only", env(0x0f, "", "", "", "", "+1")),
    ]


# ---- fuzz_safetensors ----------------------------------------------------------------------------------------------

def half_bits(x):
    return struct.unpack("<H", struct.pack("<e", x))[0]


def bf16_bits(x):
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    return (u + 0x7FFF + ((u >> 16) & 1)) >> 16


def encode(dtype, values):
    if dtype == "F32":
        return struct.pack("<%df" % len(values), *values)
    if dtype == "F16":
        return b"".join(struct.pack("<H", half_bits(v)) for v in values)
    if dtype == "BF16":
        return b"".join(struct.pack("<H", bf16_bits(v)) for v in values)
    if dtype == "I64":
        return struct.pack("<%dq" % len(values), *[int(v) for v in values])
    raise ValueError(dtype)


def safetensors(tensors, metadata=None, pad=True):
    """tensors: [(name, dtype, shape, values)] laid out in this order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, values in tensors:
        raw = encode(dtype, values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def layer_seed(tensors, metadata, via_file):
    """A layer file for which fuzz_safetensors.c (whose choices come from the FNV-1a hash of the input) asks for the
    names the file has and for every bias and the output projection, with a 256-byte err buffer, and (via_file) also
    opens it through a temporary file: a "pad" metadata value is counted up until the hash says so."""
    for i in range(1 << 20):
        data = safetensors(tensors, dict(metadata, pad=str(i)))
        h = fnv1a64(data)
        if (h % 8 in (0, 1, 2) and (h >> 28) % 8 != 0 and (h >> 30) & 1 and not (h >> 31) & 1 and not (h >> 32) & 1
                and ((h >> 8) % 16 == 0) == via_file):
            return data
    raise RuntimeError("no pad value found")


def vals(rng, n, scale=1.0):
    return [round(rng.uniform(-scale, scale), 3) for _ in range(n)]


def st_seeds():
    rng = random.Random(20240601)
    d, h = 4, 2
    mha = layer_seed([
        ("in_proj_weight", "F32", [3 * d, d], vals(rng, 3 * d * d)),
        ("in_proj_bias", "F32", [3 * d], vals(rng, 3 * d)),
        ("out_proj.weight", "F16", [d, d], vals(rng, d * d)),
        ("out_proj.bias", "BF16", [d], vals(rng, d)),
    ], {"format": "pt", "n_heads": str(h)}, True)
    # GQA, separate projections: 4 heads of 2, 2 KV heads, d_model 8.
    dm, hq, hk, hd = 8, 4, 2, 2
    gqa = layer_seed([
        ("q_proj.weight", "BF16", [hq * hd, dm], vals(rng, hq * hd * dm)),
        ("k_proj.weight", "F32", [hk * hd, dm], vals(rng, hk * hd * dm)),
        ("v_proj.weight", "F16", [hk * hd, dm], vals(rng, hk * hd * dm)),
        ("o_proj.weight", "F32", [dm, hq * hd], vals(rng, dm * hq * hd)),
        ("q_proj.bias", "F32", [hq * hd], vals(rng, hq * hd)),
        ("k_proj.bias", "F32", [hk * hd], vals(rng, hk * hd)),
        ("v_proj.bias", "F32", [hk * hd], vals(rng, hk * hd)),
        ("o_proj.bias", "F16", [dm], vals(rng, dm)),
    ], {"n_heads": str(hq), "n_kv_heads": str(hk)}, False)
    mixed = safetensors([
        ("empty", "F32", [0, 3], []),
        ("scalar", "F32", [], [3.5]),
        ("halfs", "F16", [2, 3], [0.0, -0.0, 65504.0, 6.0e-8, -1.5, 1e-5]),
        ("brains", "BF16", [5], [1.0, -2.0, 3.0e38, 1e-38, 0.1]),
        ("ids", "I64", [2], [7, -1]),
        ("floats", "F32", [1, 1, 4], [float("inf"), float("-inf"), 1e-45, -0.0]),
    ], {"format": "pt", "note": "mixed dtypes"})
    plain = safetensors([("w", "F32", [2, 2], [1.0, 2.0, 3.0, 4.0])], pad=False)
    nometa = safetensors([("a", "F16", [3], [1.0, 2.0, 3.0]), ("b", "BF16", [1, 2], [0.5, -0.5])], {})
    bad_len = struct.pack("<Q", 1 << 40) + b'{"a":{}}'
    return [
        ("mha_layer.safetensors", mha),
        ("gqa_layer.safetensors", gqa),
        ("mixed_dtypes.safetensors", mixed),
        ("plain.safetensors", plain),
        ("empty_metadata.safetensors", nometa),
        ("header_too_long", bad_len),
        ("empty_header", struct.pack("<Q", 2) + b"{}"),
    ]


def pool(dtype, page, hk, group, d, dv_code, n_pages, seqs_code, ops):
    """fuzz_pool: shape bytes, then (op, a, b) triples: op 0 new, 1 fork, 2 free, 3 append b % 80, 4 truncate,
    5 attend (a: the sequences, b: flags)."""
    shape = dtype | page << 2 | (hk - 1) << 4 | (group - 1) << 5
    widths = (d - 1) | dv_code
    more = (n_pages - 1) | seqs_code << 6
    return bytes([shape, widths, more]) + b"".join(bytes(op) for op in ops)


def pool_seeds():
    seeds = {}
    base = [(0, 0, 0), (3, 0, 37), (0, 0, 0), (1, 0, 0), (3, 1, 5), (3, 2, 20), (5, 0xFF, 0x3B), (4, 0, 30),
            (5, 0xFF, 0x12), (2, 0, 0), (3, 1, 79), (5, 0xFF, 0x61)]
    for dt, name in enumerate(("f32", "f16", "bf16", "i8")):
        seeds["basic_" + name] = pool(dt, dt % 4, 2, 2, 16, 0, 20, 3, base)
    seeds["full_pool"] = pool(1, 0, 1, 3, 8, 0, 3, 3, [(0, 0, 0), (3, 0, 79), (3, 0, 79), (1, 0, 0), (3, 1, 9),
                                                       (5, 0xFF, 0x03), (2, 0, 0), (3, 1, 60)])
    seeds["ids_out"] = pool(2, 1, 1, 1, 4, 0, 5, 0, [(0, 0, 0), (0, 0, 0), (1, 0, 0), (2, 0, 0), (2, 0, 0),
                                                     (0, 0, 0), (5, 1, 1)])
    seeds["i8_nan"] = pool(3, 2, 2, 1, 40, 0x80 | 7 << 3, 30, 1, [(0, 0, 0), (3, 0, 250), (3, 0, 251), (3, 0, 33),
                                                                  (5, 1, 0x7F)])
    seeds["mods_window"] = pool(0, 3, 1, 3, 24, 0x80 | 3 << 3, 47, 2,
                                [(0, 0, 0), (3, 0, 70), (3, 0, 70), (1, 0, 0), (3, 1, 12), (5, 3, 0x3F),
                                 (5, 3, 0x7E), (4, 0, 41), (5, 3, 0x2B)])
    return list(seeds.items())


def main():
    write_corpus("fuzz_pool", pool_seeds())
    write_corpus("fuzz_api", api_seeds())
    write_corpus("fuzz_env", env_seeds())
    write_corpus("fuzz_safetensors", st_seeds())
    total = 0
    for root, _, files in os.walk(os.path.join(HERE, "corpus")):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print("tests/fuzz/corpus: %d bytes" % total, file=sys.stderr)


if __name__ == "__main__":
    main()
