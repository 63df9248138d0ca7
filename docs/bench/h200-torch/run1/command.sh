# What ran on the device machine (one H200), 2026-12-01 20:13-20:18 UTC, from the repository
# root of commit "GPU bench comparison: ..." (scripts as committed then; ref/ carried, made
# by scripts/get_flash_pytorch_ref.sh from FLASH-pytorch 0.1.9 and rotary-embedding-torch 0.8.9).
# One call, 282 s budget: the phases ran in this order, each under the time left; the last
# (compiled-bf16 at 8x2 and 4x4) was skipped for lack of time (skipped.txt).
E=$(($(date +%s)+282)); export PYTHONUNBUFFERED=1
r(){ n=$1; shift; L=$((E-$(date +%s))); if [ $L -lt 25 ]; then echo "skipped $n ($L s left)" >>$OUT/skipped.txt; return; fi; echo "\$ $* (limit $((L-3)) s)" >>$OUT/$n.txt; timeout $((L-3)) "$@" >>$OUT/$n.txt 2>&1; echo "[$n rc=$? $(date +%T)]" >>$OUT/$n.txt; }
P="python3 scripts/flash_torch.py bench --device cuda --batch 16"
R="python3 scripts/flash_pytorch_ref_bench.py --device cuda --batch 16"
{ date -u; nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv; python3 -c 'import torch,einops;print("torch",torch.__version__,"einops",einops.__version__)'; nproc; } >$OUT/fp32.txt 2>&1
r fp32 $P --mode eager-fp32 --splits --steps 10
r cbf16 $P --mode compiled-bf16 --splits 16x1 --steps 20
r ref $R --mode eager-fp32 --splits 16x1,4x4 --steps 10
r bf16 $P --mode eager-bf16 --splits --steps 10
r cmp scripts/bench_compare_gpu.sh --rounds 1 --modes eager-fp32 --splits 16x1 --steps 5
r refc $R --mode compiled-bf16 --splits 16x1 --steps 10
r cbf16b $P --mode compiled-bf16 --splits 8x2,4x4 --steps 10
