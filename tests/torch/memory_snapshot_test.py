#!/usr/bin/env python3
"""`remat plan --memory-snapshot`: the file PyTorch's memory viewer reads.

    REMAT=build/bin/remat /usr/bin/python3 tests/torch/memory_snapshot_test.py

Checked against what the viewer's code requires (torch/utils/viz/MemoryViz.js and
torch/csrc/cuda/memory_snapshot.cpp, read for issue 19; docs/report.md):
- pickle protocol 2 to 4, and only opcodes MemoryViz.js's own unpickler reads;
- `segments` and `device_traces`; every trace entry's keys; frames with string name and filename;
- categories include `unknown` (the viewer throws without it once any entry has a category);
- every free is a free_requested then a free_completed at the address of a live alloc of that
  size (the viewer matches by address);
- the segment's blocks tile it in address order (torch 1.13's own _memory_viz.stats asserts
  that), and the blocks still allocated are the trace's allocations never freed;
- the trace's highest total is `remat plan --json`'s allocator_peak_bytes, to the byte.
And the measured side: measure_step.py --memory-snapshot records a real torch 1.13 step (every
tensor block the allocation probe counts) in the same format; its highest total is the step's
measured peak to the byte, and for a plan that keeps everything it agrees with the predicted
snapshot's within 0.1% (the sweep's tolerance is 1%).
"""

import json
import os
import pickle
import pickletools
import subprocess
import sys
import tempfile
import unittest

from torch.cuda import _memory_viz

REMAT = os.environ.get("REMAT", "build/bin/remat")

# MemoryViz.js's unpickler (its opcode table); anything else makes it throw.
VIEWER_OPCODES = {
    "PROTO", "FRAME", "STOP", "MARK", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "DICT", "LIST",
    "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "SETITEM", "SETITEMS", "APPEND", "APPENDS", "BININT",
    "BININT1", "BININT2", "LONG1", "BINUNICODE", "SHORT_BINUNICODE", "NONE", "NEWTRUE",
    "NEWFALSE", "BINFLOAT", "BINPUT", "LONG_BINPUT", "BINGET", "LONG_BINGET", "MEMOIZE",
}

CASES = [
    ["--model", "llama2-7b", "--sharding", "fsdp", "--world-size", "8", "--strategy", "sqrt"],
    ["--model", "gpt2", "--sharding", "ddp", "--world-size", "2", "--micro-batch", "4",
     "--strategy", "selective"],
    ["--model", "tiny-llama", "--train", "lora", "--precision", "bf16-mixed", "--strategy", "full",
     "--grad-accumulation", "2"],
    ["--model", "tiny-gpt2", "--sharding", "fsdp", "--world-size", "4", "--recipe", "dpo",
     "--strategy", "optimal"],
    ["--model", "gpt2", "--sharding", "zero3", "--world-size", "4", "--strategy", "every-3"],
]


HERE = os.path.dirname(os.path.abspath(__file__))


def highest_total(trace, test):
    """The largest sum of live allocations, replaying alloc and free_completed by address."""
    live, total, highest = {}, 0, 0
    for e in trace:
        if e["action"] == "alloc":
            test.assertNotIn(e["addr"], live)
            live[e["addr"]] = e["size"]
            total += e["size"]
            highest = max(highest, total)
        elif e["action"] == "free_completed":
            total -= live.pop(e["addr"])
    return highest


def plan(args, snapshot):
    out = subprocess.run([REMAT, "plan", *args, "--json", "--memory-snapshot", snapshot],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


class MemorySnapshotTest(unittest.TestCase):
    def check(self, args):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "plan.pickle")
            predicted = plan(args, path)
            with open(path, "rb") as f:
                raw = f.read()
        self.assertEqual(raw[:2], b"\x80\x02", "protocol 2")
        used = {op.name for op, _, _ in pickletools.genops(raw)}
        self.assertLessEqual(used, VIEWER_OPCODES)
        s = pickle.loads(raw)
        self.assertIn("segments", s)
        self.assertIn("device_traces", s)
        self.assertEqual(len(s["device_traces"]), 1)
        trace = s["device_traces"][0]

        categories = {e["category"] for e in trace if "category" in e}
        self.assertIn("unknown", categories)
        self.assertTrue({"parameters", "activations", "temporaries"} <= categories, categories)

        live, total, highest = {}, 0, 0
        pending = None  # a free_requested waits for its free_completed
        for e in trace:
            for key in ("action", "addr", "size", "stream", "frames"):
                self.assertIn(key, e)
            self.assertEqual(e["stream"], 0)
            for fr in e["frames"]:
                self.assertIsInstance(fr["name"], str)
                self.assertIsInstance(fr["filename"], str)
                self.assertIsInstance(fr["line"], int)
            if pending is not None:
                self.assertEqual(e["action"], "free_completed")
                self.assertEqual(e["addr"], pending["addr"])
            if e["action"] == "alloc":
                self.assertNotIn(e["addr"], live, "an address is reused before its free")
                self.assertTrue(e["frames"], "an allocation names what it is")
                live[e["addr"]] = e["size"]
                total += e["size"]
                highest = max(highest, total)
            elif e["action"] == "free_requested":
                self.assertEqual(live.get(e["addr"]), e["size"])
                pending = e
                continue
            elif e["action"] == "free_completed":
                total -= live.pop(e["addr"])
            else:
                self.assertEqual(e["action"], "segment_alloc")
            pending = None
        self.assertEqual(highest, predicted["allocator_peak_bytes"])

        # The segments as torch 1.13's viewer module reads them: blocks tile each segment.
        stats = _memory_viz.stats(s["segments"])
        self.assertEqual(stats["segments"], 1)
        seg = s["segments"][0]
        self.assertEqual(seg["total_size"], trace[0]["size"])
        at = seg["address"]
        still = {}
        for b in seg["blocks"]:
            self.assertEqual(b["address"], at, "blocks in address order, no holes")
            at += b["size"]
            if b["state"] == "active_allocated":
                still[b["address"]] = b["size"]
            else:
                self.assertEqual(b["state"], "inactive")
        self.assertEqual(still, live, "the allocated blocks are what the trace left")
        self.assertEqual(seg["allocated_size"], sum(live.values()))
        # 1.13's flame-graph lines over the blocks (format_flamegraph's input) need the same keys.
        lines = _memory_viz.segments(s["segments"], format_flamegraph=lambda text: text)
        self.assertIn("active_allocated", lines)

    def test_cases(self):
        for args in CASES:
            with self.subTest(args=" ".join(args)):
                self.check(args)

    def test_measured_side(self):
        config = {"model_type": "gpt2", "n_layer": 4, "n_embd": 64, "n_head": 4, "vocab_size": 512,
                  "n_positions": 256, "activation_function": "gelu_new", "resid_pdrop": 0.0,
                  "embd_pdrop": 0.0, "attn_pdrop": 0.0, "tie_word_embeddings": True}
        with tempfile.TemporaryDirectory() as tmp:
            cfg = os.path.join(tmp, "config.json")
            with open(cfg, "w") as f:
                json.dump(config, f)
            predicted_path = os.path.join(tmp, "predicted.pickle")
            measured_path = os.path.join(tmp, "measured.pickle")
            predicted = plan(["--model", cfg, "--micro-batch", "2", "--seq", "64", "--precision", "fp32",
                              "--optimizer-impl", "for-loop", "--torch", "cpu-1.13", "--profile", "hf-eager",
                              "--strategy", "none"], predicted_path)
            plan_path = os.path.join(tmp, "plan.json")
            with open(plan_path, "w") as f:
                json.dump(predicted, f)
            out = subprocess.run([sys.executable, os.path.join(HERE, "measure_step.py"), cfg, "--micro-batch",
                                  "2", "--seq", "64", "--plan", plan_path, "--memory-snapshot", measured_path],
                                 check=True, capture_output=True, text=True).stdout
            measured = json.loads(out)
            with open(measured_path, "rb") as f:
                raw = f.read()
            with open(predicted_path, "rb") as f:
                predicted_trace = pickle.load(f)["device_traces"][0]
        self.assertLessEqual({op.name for op, _, _ in pickletools.genops(raw)}, VIEWER_OPCODES)
        s = pickle.loads(raw)
        trace = s["device_traces"][0]
        self.assertEqual(trace[0]["category"], "unknown")
        labels = {e["frames"][0]["name"] for e in trace if e["frames"]}
        self.assertIn("live at the step's start", labels)
        self.assertIn("B(3)", labels)  # framed by the boundary the step was heading for
        m = highest_total(trace, self)
        self.assertEqual(m, measured["step_peak_bytes"])
        p = highest_total(predicted_trace, self)
        self.assertEqual(p, predicted["allocator_peak_bytes"])
        self.assertLess(abs(p - m) / m, 0.001, f"predicted {p}, measured {m}")

    def test_bad_path_is_one_line(self):
        r = subprocess.run([REMAT, "plan", "--model", "gpt2", "--memory-snapshot",
                            "/nonexistent/dir/plan.pickle"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr.count("\n"), 1)
        self.assertIn("--memory-snapshot '/nonexistent/dir/plan.pickle'", r.stderr)


if __name__ == "__main__":
    sys.exit(unittest.main())
