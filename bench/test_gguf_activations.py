"""bench/gguf_activations.py on a tiny llama model with random weights, written here as a GGUF
file: the tokenizers on inputs with known tokens, layer 0's Q, K and V against an independent
computation, causality of the later layers, the .npy format, and the perplexity of a model whose
output weights are zero (uniform predictions: exactly the vocabulary size)."""
import json
import os
import time

import gguf
import numpy as np
import pytest

import gguf_activations as ga

SEED = int(os.environ.get("PBSA_TEST_SEED", time.time_ns() % 2**32))
print(f"PBSA_TEST_SEED={SEED}")
HIDDEN, HEADS, KV_HEADS, FFN, LAYERS, BASE = 128, 2, 1, 96, 2, 10000.0
TEXT = "hello hello hello, world 42"
# Bytes are tokens 0-255 (GPT-2's alphabet), then the merges' results.
MERGES = ["h e", "l l", "he ll", "hell o", "Ġ hello"]
EXPECTED_IDS = [259, 260, 260, ord(","), 32, ord("w"), ord("o"), ord("r"), ord("l"), ord("d"),
                32, ord("4"), ord("2")]


def write_model(path, rng):
    alphabet = ga._byte_to_unicode()
    tokens = [alphabet[b] for b in range(256)] + ["he", "ll", "hell", "hello", "Ġhello"]
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(BASE)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_add_bos_token(False)
    weights = {}

    def add(name, shape, scale=0.2, quantize=False):
        value = (rng.standard_normal(shape) * scale).astype(np.float32)
        if quantize:  # Q8_0, as real files store embeddings: the script must dequantize
            packed = gguf.quants.quantize(value, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, packed, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            value = gguf.quants.dequantize(packed, gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, value)
        weights[name] = value

    add("token_embd.weight", (len(tokens), HIDDEN), 1.0, quantize=True)
    for i in range(LAYERS):
        add(f"blk.{i}.attn_norm.weight", (HIDDEN,), 1.0)
        add(f"blk.{i}.attn_q.weight", (HIDDEN, HIDDEN))
        add(f"blk.{i}.attn_k.weight", (KV_HEADS * HIDDEN // HEADS, HIDDEN))
        add(f"blk.{i}.attn_v.weight", (KV_HEADS * HIDDEN // HEADS, HIDDEN))
        add(f"blk.{i}.attn_output.weight", (HIDDEN, HIDDEN))
        add(f"blk.{i}.ffn_norm.weight", (HIDDEN,), 1.0)
        add(f"blk.{i}.ffn_gate.weight", (FFN, HIDDEN))
        add(f"blk.{i}.ffn_up.weight", (FFN, HIDDEN))
        add(f"blk.{i}.ffn_down.weight", (HIDDEN, FFN))
    add("output_norm.weight", (HIDDEN,), 1.0)
    add("output.weight", (len(tokens), HIDDEN), 0.0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return weights, len(tokens)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model") / "tiny.gguf")
    weights, vocab = write_model(path, np.random.default_rng(SEED))
    return path, weights, vocab


def capture(model, tmp_path, text, *extra):
    tmp_path.mkdir(parents=True, exist_ok=True)
    text_path = tmp_path / "text.txt"
    text_path.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    summary = ga.main([model[0], str(text_path), "--layers", "0,1", "--out-dir", str(out),
                       *extra])
    acts = {f"{name}{layer}": np.load(out / f"layer{layer:02d}_{name}.npy")
            for layer in (0, 1) for name in "qkv"}
    return summary, acts, out


def test_gpt2_tokenizer(model):
    assert ga.tokenize(ga.Model(model[0]), TEXT).tolist() == EXPECTED_IDS


def test_sentencepiece_tokenizer():
    vocab = {"▁": 0, "h": 1, "i": 2, "▁h": 3, "▁hi": 4, "<0x21>": 5}
    scores = [0.0, 0.0, 0.0, -1.0, -0.5, 0.0]
    assert ga._spm("hi!", vocab, scores) == [4, 5]


def test_activations_and_perplexity(model, tmp_path):
    path, weights, vocab = model
    summary, acts, out = capture(model, tmp_path, TEXT)
    tokens = len(EXPECTED_IDS)
    assert summary["tokens"] == tokens
    # Zero output weights: every prediction is uniform over the vocabulary.
    assert summary["perplexity"] == pytest.approx(vocab, rel=1e-4)
    assert json.loads((out / "activations.json").read_text())["perplexity"] == summary["perplexity"]
    d = HIDDEN // HEADS
    for name, heads in (("q0", HEADS), ("k0", KV_HEADS), ("v0", KV_HEADS)):
        assert acts[name].dtype == np.dtype("<f4") and acts[name].flags.c_contiguous
        assert acts[name].shape == (1, heads, tokens, d)

    # Layer 0, independently: RMS norm, projection, RoPE as complex rotations of adjacent pairs.
    x = weights["token_embd.weight"][EXPECTED_IDS].astype(np.float64)
    a = x / np.sqrt(np.mean(x * x, axis=1, keepdims=True) + 1e-5) * weights["blk.0.attn_norm.weight"]
    angles = np.arange(tokens)[:, None] * BASE ** (-np.arange(0, d, 2) / d)
    for name, heads, rotate in (("q", HEADS, True), ("k", KV_HEADS, True), ("v", KV_HEADS, False)):
        proj = (a @ weights[f"blk.0.attn_{name}.weight"].T).reshape(tokens, heads, d)
        if rotate:
            z = (proj[..., 0::2] + 1j * proj[..., 1::2]) * np.exp(1j * angles)[:, None, :]
            proj = np.stack([z.real, z.imag], axis=-1).reshape(tokens, heads, d)
        np.testing.assert_allclose(acts[f"{name}0"][0], proj.transpose(1, 0, 2), rtol=1e-4,
                                   atol=1e-4)


def test_later_layers_are_causal(model, tmp_path):
    """Layer 1 sees layer 0's attention: the first tokens' activations must not depend on the
    tokens after them."""
    _, whole, _ = capture(model, tmp_path / "whole", TEXT)
    _, prefix, _ = capture(model, tmp_path / "prefix", TEXT, "--max-tokens", "7")
    for name in ("q1", "k1", "v1"):
        np.testing.assert_allclose(prefix[name][0], whole[name][0][:, :7], rtol=1e-4, atol=1e-5)
        assert not np.allclose(whole[name][0][:, 7:], 0)


def test_bf16_output(model, tmp_path):
    _, f32, _ = capture(model, tmp_path / "f32", TEXT)
    _, bf16, _ = capture(model, tmp_path / "bf16", TEXT, "--dtype", "bf16")
    assert bf16["q0"].dtype == np.dtype("<u2")
    np.testing.assert_array_equal(bf16["q0"], ga.to_bf16_bits(f32["q0"]))
