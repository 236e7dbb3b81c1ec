#!/usr/bin/env python3
"""Tests of python/remat_torch (the bridge): a plan applied changes memory, not the model.

    REMAT=build/bin/remat /usr/bin/python3 tests/torch/bridge_test.py

For GPT-2, Llama, NeoX, Qwen2, Gemma2 (its sliding-window layers get another mask), Phi-3,
Mixtral and Falcon and each strategy: apply_plan leaves the state_dict keys and the
model's forward alone, the loss and every gradient are equal to the unwrapped model's (no
dropout, so bit for bit), and the blocks the plan names are the ones checkpointed. Then the
refusals: a plan for another block count, an offloading plan, selective, a missing binary.
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))

try:
    import torch  # noqa: E402
except ImportError:
    sys.exit("bridge_test.py: needs PyTorch: apt-get install python3-torch, and run it with /usr/bin/python3")

import hf_models  # noqa: E402
import remat_torch  # noqa: E402

CONFIGS = {
    "gpt2": {"model_type": "gpt2", "n_layer": 4, "n_embd": 32, "n_head": 4, "vocab_size": 512, "n_positions": 64,
             "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
    "llama": {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 32, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 512},
    "gpt_neox": {"model_type": "gpt_neox", "num_hidden_layers": 4, "hidden_size": 32, "num_attention_heads": 4,
                 "intermediate_size": 128, "vocab_size": 512},
    "qwen2": {"model_type": "qwen2", "num_hidden_layers": 4, "hidden_size": 32, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 512, "tie_word_embeddings": True},
    # sliding window 4 < seq 16 on the even layers: a segment's blocks get different masks
    "gemma2": {"model_type": "gemma2", "num_hidden_layers": 4, "hidden_size": 32, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 64, "vocab_size": 512,
               "query_pre_attn_scalar": 16, "sliding_window": 4},
    "phi3": {"model_type": "phi3", "num_hidden_layers": 4, "hidden_size": 32, "num_attention_heads": 4,
             "intermediate_size": 64, "vocab_size": 512},
    "mixtral": {"model_type": "mixtral", "num_hidden_layers": 4, "hidden_size": 32, "num_attention_heads": 4,
                "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 512, "num_local_experts": 4,
                "num_experts_per_tok": 2},
    "falcon": {"model_type": "falcon", "num_hidden_layers": 4, "hidden_size": 32, "num_attention_heads": 4,
               "vocab_size": 512, "new_decoder_architecture": True, "num_kv_heads": 2},
}


class Bridge(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.paths = {}
        for name, cfg in CONFIGS.items():
            p = os.path.join(cls.tmp.name, f"{name}.json")
            with open(p, "w") as f:
                json.dump(cfg, f)
            cls.paths[name] = p

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def plan(self, name, strategy, **extra):
        return remat_torch.plan(self.paths[name], micro_batch=2, seq=16, precision="fp32", profile="hf-eager",
                                torch="cpu-1.13", strategy=strategy, **extra)

    def step(self, model, ids):
        model.zero_grad(set_to_none=True)
        loss = model(ids, ids)
        loss.backward()
        # (named_parameters() from the root shows checkpoint_wrapper's prefix; state_dict() does not)
        return loss.detach(), {n.replace("_checkpoint_wrapped_module.", ""): p.grad.clone()
                               for n, p in model.named_parameters()}

    def test_same_model_same_gradients(self):
        for name in CONFIGS:
            for strategy, expect in (("none", []), ("full", [(0, 0), (1, 1), (2, 2), (3, 3)]),
                                     ("every-2", [(0, 0), (2, 2)]), ("segments-2", [(0, 1), (2, 3)]),
                                     ("sqrt", [(0, 1), (2, 3)])):
                with self.subTest(model=name, strategy=strategy):
                    torch.manual_seed(0)
                    ref = hf_models.build_model(CONFIGS[name])
                    hf_models.randomize_params(ref, 1)
                    model = hf_models.build_model(CONFIGS[name])
                    model.load_state_dict(ref.state_dict())
                    keys = list(model.state_dict().keys())
                    runs = remat_torch.apply_plan(model, self.plan(name, strategy))
                    self.assertEqual(runs, expect)
                    self.assertEqual(list(model.state_dict().keys()), keys)
                    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(3))
                    loss_ref, grads_ref = self.step(ref, ids)
                    loss, grads = self.step(model, ids)
                    self.assertTrue(torch.equal(loss, loss_ref))
                    self.assertEqual(grads.keys(), grads_ref.keys())
                    for n in grads:
                        self.assertTrue(torch.equal(grads[n], grads_ref[n]), n)

    def test_checkpointed_blocks_are_recomputed(self):
        model = hf_models.build_model(CONFIGS["llama"])
        remat_torch.apply_plan(model, self.plan("llama", "every-2"))
        calls = []
        for i, b in enumerate(model.model.layers):
            inner = getattr(b, "_checkpoint_wrapped_module", b)
            inner.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
        ids = torch.randint(0, 512, (2, 16))
        loss = model(ids, ids)
        self.assertEqual(calls, [0, 1, 2, 3])
        loss.backward()
        self.assertEqual(calls[4:], [2, 0])  # blocks 0 and 2 ran again in backward, last first

    def test_segment_blocks_run_at_their_own_calls(self):
        # a segment's blocks each run when the model calls them, with their own arguments, and
        # backward recomputes the segment once, first block to last
        model = hf_models.build_model(CONFIGS["gemma2"])
        self.assertEqual(remat_torch.apply_plan(model, self.plan("gemma2", "segments-2")), [(0, 1), (2, 3)])
        calls, masks = [], []
        for i, b in enumerate(model.model.layers):
            b.self_attn.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
            b.register_forward_pre_hook(lambda m, a, kw=None, i=i: masks.append(i))
        ids = torch.randint(0, 512, (2, 16))
        loss = model(ids, ids)
        self.assertEqual(calls, [0, 1, 2, 3])
        self.assertEqual(masks, [0, 1, 2, 3])  # the model's own calls, one per block
        loss.backward()
        self.assertEqual(calls[4:], [2, 3, 0, 1])

    def test_plan_for_another_model_is_refused(self):
        cfg = dict(CONFIGS["gpt2"], n_layer=3)
        with self.assertRaisesRegex(remat_torch.PlanError, "the plan is for .* with 4 blocks, but this model has 3"):
            remat_torch.apply_plan(hf_models.build_model(cfg), self.plan("gpt2", "full"))

    def test_unsupported_plans_are_refused(self):
        model = hf_models.build_model(CONFIGS["gpt2"])
        with self.assertRaisesRegex(remat_torch.PlanError, "offloads checkpoints"):
            remat_torch.apply_plan(model, self.plan("gpt2", "full", offload_checkpoints=True))
        with self.assertRaisesRegex(remat_torch.PlanError, "selective"):
            remat_torch.apply_plan(model, self.plan("gpt2", "selective"))

    def test_no_blocks_found(self):
        with self.assertRaisesRegex(remat_torch.PlanError, "no transformer blocks found in Linear"):
            remat_torch.apply_plan(torch.nn.Linear(2, 2), self.plan("gpt2", "full"))

    def test_missing_binary_and_bad_question(self):
        with self.assertRaisesRegex(remat_torch.PlanError, "cannot run /nonexistent/remat"):
            remat_torch.plan(self.paths["gpt2"], binary="/nonexistent/remat")
        with self.assertRaisesRegex(remat_torch.PlanError, "precision"):
            remat_torch.plan(self.paths["gpt2"], precision="fp8")

    def test_emit_torch_applies_the_same_plan(self):
        exe = remat_torch._remat_binary(None)
        args = ["plan", "--model", self.paths["gpt2"], "--micro-batch", "2", "--seq", "16", "--precision", "fp32",
                "--profile", "hf-eager", "--strategy", "every-2"]
        code = subprocess.run([exe] + args + ["--emit", "torch"], capture_output=True, text=True, check=True).stdout
        model = hf_models.build_model(CONFIGS["gpt2"])
        scope = {"model": model}
        exec(compile(code, "<remat plan --emit torch>", "exec"), scope)
        self.assertEqual(scope["runs"], [(0, 0), (2, 2)])


if __name__ == "__main__":
    unittest.main(verbosity=1)
