#!/usr/bin/env bash
# scripts/check_with_torch.sh DATA.gz OUTDIR: checks that need python3 with torch and
# safetensors (not part of `make test`, which runs without Python):
#  1. `./train export` files load into the spec-written PyTorch model (scripts/flash_torch.py,
#     FLASH-pytorch's parameter names) with load_state_dict(strict=True), for scalenorm and
#     layernorm models;
#  2. parity on extra float64 fixtures of other shapes and options made by that model.
# Build first: make train build/f32/parity
set -euo pipefail
cd "$(dirname "$0")/.."
data=$1; out=$2
mkdir -p "$out"
small=(--dim 48 --depth 2 --group-size 16 --qk-dim 40 --seq-len 64 --batch 2 --accum 1 --steps 2 --warmup 0
       --eval-every 0 --sample-every 0 --threads 2)
for norm in scalenorm layernorm; do
    ./train "$data" --out "$out/run-$norm" --norm "$norm" "${small[@]}" > "$out/run-$norm.log"
    ./train export "$out/run-$norm" "$out/export-$norm.safetensors"
    python3 scripts/flash_torch.py check-export "$out/export-$norm.safetensors"
done
fx="$out/fixtures"
python3 scripts/flash_torch.py fixture "$fx" wide_ln_shift --seq-len 37 --config \
  '{"num_tokens": 256, "dim": 48, "depth": 3, "group_size": 8, "query_key_dim": 20, "expansion_factor": 1.5, "causal": true, "norm_type": "layernorm", "shift_tokens": true, "laplace_attn_fn": true}'
python3 scripts/flash_torch.py fixture "$fx" one_short_group --seq-len 50 --config \
  '{"num_tokens": 256, "dim": 32, "depth": 1, "group_size": 64, "query_key_dim": 64, "expansion_factor": 2.0, "causal": true, "norm_type": "scalenorm", "shift_tokens": false, "laplace_attn_fn": false}'
python3 scripts/flash_torch.py fixture "$fx" blocked_groups --seq-len 300 --batch 1 --config \
  '{"num_tokens": 256, "dim": 32, "depth": 2, "group_size": 128, "query_key_dim": 16, "expansion_factor": 2.0, "causal": true, "norm_type": "scalenorm", "shift_tokens": true, "laplace_attn_fn": true}'
mkdir -p "$out/parity"
./build/f32/parity "$fx" "$out/parity"
