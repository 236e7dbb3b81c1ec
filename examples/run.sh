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

echo "== train_with_plan: predicted against measured"
$PY examples/train_with_plan.py
