"""The model shapes of the training benchmarks, one entry each (config.json values of the real
models). scripts/torch_train_bench.py builds its PyTorch model from an entry; scripts/bench_train.py
passes the name to build/bench/train_throughput (which has the same shapes in shape_config) and, for
its memory mode, writes a random model folder of the shape with scripts/make_random_model.py.

Keys: hidden, layers, heads, kv_heads, inter, vocab, qkv_bias, rope_theta, eps (the model);
arch (make_random_model.py --arch), tokenizer (under ../shared/tokenizers, for the memory mode);
torch (whether scripts/torch_train_bench.py has this family's model).
"""

SHAPES = {
    "smollm2-135m": dict(hidden=576, layers=30, heads=9, kv_heads=3, inter=1536, vocab=49152,
                         qkv_bias=False, rope_theta=100000.0, eps=1e-5, arch="llama",
                         tokenizer="smollm2-135m", torch=True),
    "qwen2.5-0.5b": dict(hidden=896, layers=24, heads=14, kv_heads=2, inter=4864, vocab=151936,
                         qkv_bias=True, rope_theta=1000000.0, eps=1e-6, arch="qwen2",
                         tokenizer="qwen3", torch=True),
    "gemma3-270m": dict(hidden=640, layers=18, heads=4, kv_heads=1, inter=2048, vocab=262144,
                        qkv_bias=False, rope_theta=1000000.0, eps=1e-6, gemma=True, head_dim=256,
                        query_pre_attn_scalar=256, sliding_window=512, sliding_pattern=6,
                        rope_local_theta=10000.0, arch="gemma3", tokenizer="gemma3", torch=True),
}

# The LoRA targets both sides train (all seven projections), as the runs report them.
LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
