#!/usr/bin/env bash
# tests/run_cuda_sanitize.sh DATA [TOOLS [PARTS]]: compute-sanitizer over the CUDA code (make
# test-cuda-sanitize, on a machine with a GPU). TOOLS (default: memcheck racecheck initcheck
# synccheck) each run over PARTS (default: all of them, "unit flash gau taylor"): unit is
# build/f32/test_cuda; flash, gau and taylor are a short training run of that model in fp32
# and in bf16 (a small model: validation, a sample and a checkpoint inside) and ./train
# sample on the bf16 run. Each line "ok TOOL WHAT" needs the tool's "0 errors" and the
# program's exit 0.
# Ends with "N passed, N failed, N skipped".
set -u
data=$1
tools=${2:-memcheck racecheck initcheck synccheck}
parts=${3:-unit flash gau taylor}
train=${FLASH_TRAIN_BIN:-./train}
passed=0; failed=0; skipped=0
work=$(mktemp -d /tmp/flash-cuda-san.XXXXXX)
trap 'rm -rf "$work"' EXIT
cs=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
if [ -z "$cs" ] || ! nvidia-smi >/dev/null 2>&1; then
    echo "skip compute-sanitizer: $([ -z "$cs" ] && echo 'no compute-sanitizer' || echo 'no GPU')"
    echo "0 passed, 0 failed, 1 skipped"; exit 0
fi
S="--dim 64 --depth 2 --seq-len 96 --batch 2 --accum 2 --steps 3 --warmup 1
   --eval-every 3 --eval-windows 2 --sample-every 3 --sample-len 16 --sample-prime 8 --ckpt-every 3"
one() {  # tool, name, command...
    local tool=$1 name=$2; shift 2
    local log=$work/$tool-$name.log
    "$cs" --tool "$tool" --error-exitcode 99 "$@" > "$log" 2>&1; local rc=$?
    # memcheck, initcheck, synccheck end "ERROR SUMMARY: 0 errors"; racecheck "RACECHECK
    # SUMMARY: 0 hazards displayed (0 errors, 0 warnings)"
    if [ $rc -eq 0 ] && grep -Eq 'ERROR SUMMARY: 0 errors|RACECHECK SUMMARY: 0 hazards displayed \(0 errors, 0 warnings\)' "$log"; then
        grep -E '(ERROR|RACECHECK) SUMMARY' "$log" | tail -1 | sed "s/^/     $tool $name: /"
        echo "ok   $tool $name"; passed=$((passed + 1))
    else
        echo "FAIL $tool $name (exit $rc)"; { grep -E 'SUMMARY|Invalid|Race|Uninitialized|Barrier|FAIL' "$log" | head -8; tail -3 "$log"; } | sed 's/^/  /'
        failed=$((failed + 1))
    fi
}
S_flash=(--group-size 32 --qk-dim 32); S_gau=(--model gau --qk-dim 32); S_taylor=(--group-size 32 --qk-dim 16 --linear-attn taylor)
for t in $tools; do
    for part in $parts; do
        if [ "$part" = unit ]; then one "$t" test_cuda build/f32/test_cuda; continue; fi
        declare -n extra="S_$part"
        for prec in fp32 bf16; do
            # shellcheck disable=SC2086
            one "$t" "${part}_train_$prec" "$train" $S "${extra[@]}" --device cuda --precision $prec \
                --out "$work/$t-$part-$prec" "$data"
        done
        if [ -d "$work/$t-$part-bf16" ]; then
            one "$t" "${part}_sample" "$train" sample "$work/$t-$part-bf16" --device cuda --len 40 --num-samples 3
        fi
        unset -n extra
    done
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
