"""Writes a Hugging Face Llama directory (config.json + model.safetensors, f32 or f16) as a GGUF
file for llama.cpp: the same weights, renamed, with the q/k rows permuted for llama.cpp's RoPE.
An f16 checkpoint's matrices stay f16 (llama.cpp's MOSTLY_F16; the norms f32, as its converter
writes them).

    python3 scripts/peer_llamacpp_gguf.py MODEL_DIR OUT.gguf

Hugging Face's Llama rotates the two halves of each head (x[i] with x[i + d/2]); llama.cpp's
rotates neighbours (x[2i] with x[2i + 1]). llama.cpp's own converter (convert_hf_to_gguf.py,
LlamaModel.permute) therefore reorders the rows of q_proj and k_proj within each head so that
row i and row i + d/2 become neighbours; this does the same, with n_head for q and n_kv_head
for k. The vocabulary (a checkpoint from save_random has none) is placeholders: llama.cpp needs
one to load, and both engines are given token ids. Needs numpy and the gguf package.
"""

import json
import struct
import sys

import numpy as np
import gguf


def read_safetensors(path):
    """name -> float32 or float16 array, from a safetensors file of F32 or F16 tensors."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        kinds = {"F32": np.float32, "F16": np.float16}
        if t["dtype"] not in kinds:
            sys.exit(f"{name}: {t['dtype']}; this writer takes f32 or f16 checkpoints")
        start, end = t["data_offsets"]
        out[name] = np.frombuffer(data[start:end], dtype=kinds[t["dtype"]]).reshape(t["shape"])
    return out


def permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute: (n_head·d, in) rows, halves → neighbours."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: peer_llamacpp_gguf.py MODEL_DIR OUT.gguf")
    src, dst = sys.argv[1], sys.argv[2]
    cfg = json.load(open(f"{src}/config.json"))
    t = read_safetensors(f"{src}/model.safetensors")
    half = t["model.embed_tokens.weight"].dtype == np.float16
    # llama.cpp keeps 1-D tensors (the norms) in f32 whatever the file type.
    t = {n: (v.astype(np.float32) if v.ndim == 1 else v) for n, v in t.items()}
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim", cfg["hidden_size"] // heads)
    vocab = cfg["vocab_size"]

    w = gguf.GGUFWriter(dst, "llama")
    w.add_name("kvserve random checkpoint")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(head_dim)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if half else gguf.LlamaFileType.ALL_F32)

    # Placeholder SentencePiece vocabulary: <unk> <s> </s>, the 256 byte tokens, then pieces.
    names = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    names += [f"\u2581t{i}" for i in range(len(names), vocab)]
    names = names[:vocab]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * vocab
    w.add_tokenizer_model("llama")
    w.add_token_list(names)
    w.add_token_scores([0.0] * vocab)
    w.add_token_types(types[:vocab])
    w.add_bos_token_id(cfg.get("bos_token_id") or 1)
    eos = cfg.get("eos_token_id")
    w.add_eos_token_id((eos[0] if isinstance(eos, list) else eos) or 2)
    w.add_add_bos_token(False)

    w.add_tensor("token_embd.weight", t["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", t["model.norm.weight"])
    w.add_tensor("output.weight", t.get("lm_head.weight", t["model.embed_tokens.weight"]))
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", t[p + "input_layernorm.weight"])
        w.add_tensor(f"blk.{i}.attn_q.weight", permute(t[p + "self_attn.q_proj.weight"], heads))
        w.add_tensor(f"blk.{i}.attn_k.weight", permute(t[p + "self_attn.k_proj.weight"], kv_heads))
        w.add_tensor(f"blk.{i}.attn_v.weight", t[p + "self_attn.v_proj.weight"])
        w.add_tensor(f"blk.{i}.attn_output.weight", t[p + "self_attn.o_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_norm.weight", t[p + "post_attention_layernorm.weight"])
        w.add_tensor(f"blk.{i}.ffn_gate.weight", t[p + "mlp.gate_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_up.weight", t[p + "mlp.up_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_down.weight", t[p + "mlp.down_proj.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
