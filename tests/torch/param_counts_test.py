#!/usr/bin/env python3
"""hf_models.count_parameters (built on the meta device) against published parameter counts.

    /usr/bin/python3 tests/torch/param_counts_test.py
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hf_models  # noqa: E402

PUBLISHED = {
    "Qwen2-7B": ({"model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
                  "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                  "tie_word_embeddings": False}, 7_615_616_512),
    "Gemma-7B": ({"model_type": "gemma", "vocab_size": 256000, "hidden_size": 3072, "intermediate_size": 24576,
                  "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 16, "head_dim": 256},
                 8_537_680_896),
    "Gemma-2B": ({"model_type": "gemma", "vocab_size": 256000, "hidden_size": 2048, "intermediate_size": 16384,
                  "num_hidden_layers": 18, "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256},
                 2_506_172_416),
    "Phi-3-mini-4k": ({"model_type": "phi3", "vocab_size": 32064, "hidden_size": 3072, "intermediate_size": 8192,
                       "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32},
                      3_821_079_552),
    "Mixtral-8x7B": ({"model_type": "mixtral", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
                      "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                      "num_local_experts": 8, "num_experts_per_tok": 2}, 46_702_792_704),
    "Falcon-7B": ({"model_type": "falcon", "vocab_size": 65024, "hidden_size": 4544, "n_layer": 32, "n_head": 71,
                   "multi_query": True, "parallel_attn": True, "bias": False}, 6_921_720_704),
    # Qwen/Qwen1.5-MoE-A2.7B's config.json; its model card gives 14.3B parameters, and remat's count
    # (tests/model_test.cpp) is the same exact figure.
    "Qwen1.5-MoE-A2.7B": ({"model_type": "qwen2_moe", "vocab_size": 151936, "hidden_size": 2048,
                           "intermediate_size": 5632, "num_hidden_layers": 24, "num_attention_heads": 16,
                           "num_key_value_heads": 16, "num_experts": 60, "num_experts_per_tok": 4,
                           "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632},
                          14_315_784_192),
    "GPT-NeoX-20B": ({"model_type": "gpt_neox", "vocab_size": 50432, "hidden_size": 6144, "num_hidden_layers": 44,
                      "num_attention_heads": 64, "intermediate_size": 24576}, 20_554_567_680),
}


class ParamCounts(unittest.TestCase):
    def test_published(self):
        for name, (config, want) in PUBLISHED.items():
            with self.subTest(name):
                self.assertEqual(hf_models.count_parameters(config), want)


if __name__ == "__main__":
    unittest.main()
