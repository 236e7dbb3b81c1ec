#!/usr/bin/env bash
# Runs every example, so that they stay true (CI: the `examples` test). Usage: examples/run.sh [REMAT]
set -euo pipefail
cd "$(dirname "$0")/.."
export REMAT="${1:-build/bin/remat}"
PY=/usr/bin/python3

echo "== configs: published parameter counts"
for dir in examples/configs/*/; do
    name=$(basename "$dir")
    got=$("$REMAT" plan --model "$dir/config.json" --seq 512 --json | $PY -c 'import json,sys; print(json.load(sys.stdin)["params"])')
    want=$($PY -c "import json; print(json.load(open('examples/configs/published.json'))['$name'])")
    [ "$got" = "$want" ] || { echo "$name: remat counts $got parameters, published $want" >&2; exit 1; }
    echo "$name: $got parameters, as published"
done

echo "== fsdp_dpo: the plans the trainer would apply"
$PY -m py_compile examples/fsdp_dpo/train_fsdp.py
$PY examples/fsdp_dpo/train_fsdp.py --plan-only
$PY examples/fsdp_dpo/train_fsdp.py --plan-only --pairs 40 --strategy sqrt

echo "== lora_4090: Llama-3-8B with LoRA and QLoRA on one RTX 4090 (examples/lora_4090/README.md)"
L3="--model examples/configs/llama-3-8b/config.json --gpu rtx4090-24gb --seq 2048"
LORA="--train lora --lora-targets all-linear --lora-rank 16"
if "$REMAT" plan $L3 --precision bf16 --json | $PY -c 'import json,sys; sys.exit(json.load(sys.stdin)["fits"])'; then
    echo "lora_4090: full fine-tuning does not fit, as the README says"
else
    echo "lora_4090: full fine-tuning fits on 24 GB? The README says it does not" >&2; exit 1
fi
for base in bf16 nf4; do
    "$REMAT" max-batch $L3 $LORA --base-dtype $base --strategies none,full --json |
        $PY -c 'import json,sys
r = {x["strategy"]: x["max_micro_batch"] for x in json.load(sys.stdin)["results"]}
want = {"bf16": 2, "nf4": 3}[sys.argv[1]]
assert r["none"] == 0 and r["full"] == want, f"lora_4090 {sys.argv[1]}: {r}, README says none 0, full {want}"
print(f"lora_4090 {sys.argv[1]} base: max micro-batch {r}, as the README says")' $base
done

echo "== train_with_plan: predicted against measured"
$PY examples/train_with_plan.py
