#!/usr/bin/env python3
"""Real attention inputs for the benchmark: runs a Llama-architecture model from a GGUF file on a
text file, on the CPU with numpy, and writes the post-RoPE Q, K and V of chosen layers as .npy
files ([1, heads, tokens, head_dim], float32 by default) for `pbsa-run` and
`pbsa-bench-pbs --q/--k/--v`. It prints the model's perplexity on the text, which shows that the
model ran as it should (a few units to a few tens for a real model on English text).

    python3 bench/gguf_activations.py MODEL.gguf TEXT.txt --layers 0,15,29 --out-dir acts
    build/bench/pbsa-bench-pbs --q acts/layer15_q.npy --k acts/layer15_k.npy --v acts/layer15_v.npy

Needs numpy and the `gguf` reader (`pip install gguf`, the llama.cpp project's package); no
network. Tokenizers: byte-level BPE ('gpt2', as SmolLM2, Llama 3 and Qwen models use) and
SentencePiece ('llama', as Llama 2 and TinyLlama use). RoPE is llama.cpp's for this architecture
(rotation of adjacent pairs; its converter permutes the Q and K weights to match), so Q and K are
those of llama.cpp; their dot products, the attention, equal the original model's.
"""
import argparse
import json
import math
import os
import re
import sys

import numpy as np

try:
    import gguf
except ImportError:  # pragma: no cover - a message instead of a traceback
    sys.exit("gguf_activations.py needs the gguf package: pip install gguf")


class Model:
    """The weights and hyper-parameters of a llama-architecture GGUF file, dequantized to float32."""

    def __init__(self, path):
        self.reader = gguf.GGUFReader(path)
        arch = self.field("general.architecture")
        if arch != "llama":
            raise SystemExit(f"{path}: architecture '{arch}', not llama")
        self.layers = int(self.field("llama.block_count"))
        self.heads = int(self.field("llama.attention.head_count"))
        self.kv_heads = int(self.field("llama.attention.head_count_kv", self.heads))
        self.hidden = int(self.field("llama.embedding_length"))
        self.head_dim = self.hidden // self.heads
        self.eps = float(self.field("llama.attention.layer_norm_rms_epsilon", 1e-5))
        self.rope_base = float(self.field("llama.rope.freq_base", 10000.0))
        self.context = int(self.field("llama.context_length", 2048))
        self.tensors = {t.name: t for t in self.reader.tensors}

    def field(self, key, default=None):
        field = self.reader.fields.get(key)
        if field is None:
            if default is None:
                raise SystemExit(f"the GGUF file has no '{key}'")
            return default
        return field.contents()

    def weight(self, name):
        """A tensor as float32 in numpy's order (the reverse of GGUF's dimension list)."""
        tensor = self.tensors[name]
        data = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        return np.asarray(data, np.float32).reshape(tuple(int(n) for n in reversed(tensor.shape)))

    def has(self, name):
        return name in self.tensors


# ---- tokenizers -----------------------------------------------------------------------------------

def _byte_to_unicode():
    """GPT-2's byte-level alphabet: every byte as a printable character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = {}, 0
    for b in range(256):
        if b in printable:
            codes[b] = chr(b)
        else:
            codes[b] = chr(256 + extra)
            extra += 1
    return codes


# GPT-2's pre-tokenizer with Python's re: letters are [^\W\d_], digits \d (one at a time, as
# SmolLM2 and Llama 3 split them).
_PRETOKENIZE = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d| ?[^\s\w]+|\s+(?!\S)|\s+""")


def _bpe(pieces, rank):
    """Merges the adjacent pair of lowest rank until none is left."""
    while len(pieces) > 1:
        pairs = [(rank.get((a, b), math.inf), i) for i, (a, b) in enumerate(zip(pieces, pieces[1:]))]
        best, i = min(pairs)
        if best == math.inf:
            break
        pieces = pieces[:i] + [pieces[i] + pieces[i + 1]] + pieces[i + 2:]
    return pieces


def _spm(text, vocab, scores):
    """SentencePiece BPE as llama.cpp runs it: merge the adjacent pair whose result has the best
    score; characters that are no token become their <0xXX> byte tokens."""
    pieces = list("▁" + text.replace(" ", "▁"))
    while len(pieces) > 1:
        best = None
        for i in range(len(pieces) - 1):
            token = vocab.get(pieces[i] + pieces[i + 1])
            if token is not None and (best is None or scores[token] > best[0]):
                best = (scores[token], i)
        if best is None:
            break
        i = best[1]
        pieces = pieces[:i] + [pieces[i] + pieces[i + 1]] + pieces[i + 2:]
    ids = []
    for piece in pieces:
        if piece in vocab:
            ids.append(vocab[piece])
        else:
            ids.extend(vocab[f"<0x{b:02X}>"] for b in piece.encode())
    return ids


def tokenize(model, text):
    kind = model.field("tokenizer.ggml.model")
    tokens = model.field("tokenizer.ggml.tokens")
    vocab = {t: i for i, t in enumerate(tokens)}
    if kind == "gpt2":
        rank = {tuple(m.split(" ", 1)): i for i, m in enumerate(model.field("tokenizer.ggml.merges"))}
        alphabet = _byte_to_unicode()
        ids = []
        for word in _PRETOKENIZE.findall(text):
            ids.extend(vocab[p] for p in _bpe([alphabet[b] for b in word.encode()], rank))
    elif kind == "llama":
        ids = _spm(text, vocab, model.field("tokenizer.ggml.scores"))
    else:
        raise SystemExit(f"tokenizer '{kind}' is not supported (gpt2 and llama are)")
    if model.field("tokenizer.ggml.add_bos_token", kind == "llama"):
        ids.insert(0, int(model.field("tokenizer.ggml.bos_token_id")))
    return np.array(ids, np.int64)


# ---- the model ------------------------------------------------------------------------------------

def rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope(x, base):
    """llama.cpp's rotary embedding of x [heads, tokens, head_dim]: pair (2i, 2i+1) of position p
    turned by p * base^(-2i / head_dim)."""
    heads, tokens, dim = x.shape
    angle = np.arange(tokens)[:, None] * base ** (-np.arange(0, dim, 2) / dim)[None, :]
    cos, sin = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def causal_attention(q, k, v, rows=512):
    """softmax(q k^T / sqrt(d) + causal mask) v with grouped-query heads, in blocks of rows."""
    heads, tokens, dim = q.shape
    group = heads // k.shape[0]
    out = np.empty_like(q)
    for h in range(heads):
        kh, vh = k[h // group], v[h // group]
        for start in range(0, tokens, rows):
            end = min(start + rows, tokens)
            scores = q[h, start:end] @ kh[:end].T / np.float32(math.sqrt(dim))
            scores[np.arange(end - start)[:, None] + start < np.arange(end)[None, :]] = -np.inf
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            out[h, start:end] = (scores / scores.sum(axis=1, keepdims=True)) @ vh[:end]
    return out


def run(model, ids, layers, on_layer):
    """The forward pass over ids; on_layer(index, q, k, v) receives each chosen layer's post-RoPE
    Q [heads, tokens, head_dim], K and V [kv_heads, tokens, head_dim]. Returns the perplexity of
    the text (each token predicted from those before it)."""
    x = model.weight("token_embd.weight")[ids]
    tokens, h, d = len(ids), model.heads, model.head_dim
    for i in range(model.layers):
        w = lambda name: model.weight(f"blk.{i}.{name}.weight")  # noqa: E731
        a = rms_norm(x, w("attn_norm"), model.eps)
        q = (a @ w("attn_q").T).reshape(tokens, h, d).transpose(1, 0, 2)
        k = (a @ w("attn_k").T).reshape(tokens, model.kv_heads, d).transpose(1, 0, 2)
        v = (a @ w("attn_v").T).reshape(tokens, model.kv_heads, d).transpose(1, 0, 2)
        q, k = rope(q, model.rope_base), rope(k, model.rope_base)
        if i in layers:
            on_layer(i, q, k, np.ascontiguousarray(v))
        o = causal_attention(q, k, v).transpose(1, 0, 2).reshape(tokens, h * d)
        x = x + o @ w("attn_output").T
        f = rms_norm(x, w("ffn_norm"), model.eps)
        gate = f @ w("ffn_gate").T
        x = x + ((gate / (1 + np.exp(-gate))) * (f @ w("ffn_up").T)) @ w("ffn_down").T
        print(f"layer {i + 1} of {model.layers} done", file=sys.stderr, flush=True)
    x = rms_norm(x, model.weight("output_norm.weight"), model.eps)
    head = model.weight("output.weight" if model.has("output.weight") else "token_embd.weight")
    nll = 0.0
    for start in range(0, tokens - 1, 256):
        end = min(start + 256, tokens - 1)
        logits = (x[start:end] @ head.T).astype(np.float64)
        top = logits.max(axis=1)
        log_z = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
        nll += float(np.sum(log_z - logits[np.arange(end - start), ids[start + 1:end + 1]]))
    return math.exp(nll / (tokens - 1))


def to_bf16_bits(x):
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a llama-architecture .gguf file")
    parser.add_argument("text", help="a UTF-8 text file")
    parser.add_argument("--layers", default="0",
                        help="comma-separated layer indices to capture, or 'all' (default 0)")
    parser.add_argument("--max-tokens", type=int, default=4096,
                        help="the text's first N tokens (default 4096, at most the model's context)")
    parser.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32",
                        help="the .npy element type: '<f4', '<f2', or bfloat16 bits as '<u2'")
    parser.add_argument("--out-dir", default=".", help="where layerNN_{q,k,v}.npy go")
    args = parser.parse_args(argv)

    model = Model(args.model)
    layers = set(range(model.layers)) if args.layers == "all" else \
        {int(i) for i in args.layers.split(",")}
    if not layers <= set(range(model.layers)):
        raise SystemExit(f"--layers: the model has layers 0 to {model.layers - 1}")
    with open(args.text, encoding="utf-8") as f:
        ids = tokenize(model, f.read())[:min(args.max_tokens, model.context)]
    if len(ids) < 2:
        raise SystemExit(f"{args.text}: fewer than 2 tokens")
    os.makedirs(args.out_dir, exist_ok=True)
    convert = {"f32": lambda a: a.astype(np.float32), "f16": lambda a: a.astype(np.float16),
               "bf16": to_bf16_bits}[args.dtype]

    def save(index, q, k, v):
        for name, value in (("q", q), ("k", k), ("v", v)):
            np.save(os.path.join(args.out_dir, f"layer{index:02d}_{name}.npy"),
                    convert(value[None]))

    perplexity = run(model, ids, layers, save)
    summary = {"model": os.path.basename(args.model), "text": os.path.basename(args.text),
               "tokens": int(len(ids)), "layers": sorted(layers), "heads": model.heads,
               "kv_heads": model.kv_heads, "head_dim": model.head_dim, "dtype": args.dtype,
               "perplexity": round(perplexity, 4)}
    with open(os.path.join(args.out_dir, "activations.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
