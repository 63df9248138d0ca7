#!/usr/bin/env bash
# scripts/bench_compare_gpu.sh [--rounds N] [--seq-len T] [--tokens N] [--modes LIST]
#                              [--splits LIST|auto] [--steps N] [--ref DIR | --no-ref]
#                              [--no-flash-c] [--log DIR] [--device cuda|cpu]
#                              [--model flash|gau] [--dim D] [--depth L]
#
# --dim/--depth (default 512, 8: train.py's) size all three sides alike. --model gau compares
# FLASH-Quad: flash.c's `--model gau` against FLASH-pytorch's GAU layers in the same frame
# (scripts/flash_pytorch_ref_bench.py --model gau); the spec in PyTorch is FLASH only and
# sits that comparison out.
# flash.c's CUDA training step against PyTorch on the same GPU, side by side (issue 12):
#  * flash.c: `./train bench --device cuda --precision fp32` and `--precision bf16`, the
#    train.py recipe (--preset flash-pytorch: Adam, global clipping 0.5) with the step's
#    tokens asked for as one micro-batch (--batch TOKENS/T --accum 1; flash.c picks its own
#    split); extra flags from $TRAIN_BENCH_ARGS go last;
#  * the spec in PyTorch (scripts/flash_torch.py bench --device cuda) in each mode of
#    --modes (default eager-fp32,eager-bf16,compiled-bf16), each run trying the splits of
#    the same tokens into micro-batches (default auto: 16x1, 8x2, 4x4 at T=1,024) and
#    keeping its fastest;
#  * FLASH-pytorch 0.1.9 itself (scripts/flash_pytorch_ref_bench.py) in the same modes, if
#    it can be imported (ref/ from scripts/get_flash_pytorch_ref.sh, --ref DIR,
#    $FLASH_PYTORCH_REF, or installed); --no-ref leaves it out.
# N rounds (default 3), each one run of every program, the order reversed every other
# round; then the medians of tokens/s and the ratios, as lines starting with "compare-gpu:",
# e.g. `compare-gpu: bf16 flash.c/compiled-bf16 = 1.62x`. Each run's last line goes to
# stdout; --log DIR keeps each run's whole output. flash.c is skipped, saying why, where
# ./train is missing or has no CUDA backend; PyTorch is needed, with a GPU. TRAIN names
# another flash.c binary (default ./train). --device cpu runs the same on the CPU, only to
# test this script on a machine without a GPU (small --tokens, --steps 1).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 seq_len=1024 tokens=16384 modes=eager-fp32,eager-bf16,compiled-bf16 splits=auto
steps=20 use_ref=auto ref_dir="" flash_c=1 log="" dev=cuda train=${TRAIN:-./train}
model=flash dim=512 depth=8
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
need() { [ $# -ge 2 ] || { echo "error: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) need "$@"; rounds=$2; shift 2 ;;
        --seq-len) need "$@"; seq_len=$2; shift 2 ;;
        --tokens) need "$@"; tokens=$2; shift 2 ;;
        --modes) need "$@"; modes=$2; shift 2 ;;
        --splits) need "$@"; splits=$2; shift 2 ;;
        --steps) need "$@"; steps=$2; shift 2 ;;
        --ref) need "$@"; ref_dir=$2; use_ref=1; shift 2 ;;
        --no-ref) use_ref=0; shift ;;
        --no-flash-c) flash_c=0; shift ;;
        --log) need "$@"; log=$2; shift 2 ;;
        --device) need "$@"; dev=$2; shift 2 ;;
        --model) need "$@"; model=$2; shift 2 ;;
        --dim) need "$@"; dim=$2; shift 2 ;;
        --depth) need "$@"; depth=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
[ "$model" = flash ] || [ "$model" = gau ] || { echo "error: --model must be flash or gau (got '$model')" >&2; exit 2; }
for v in rounds seq_len tokens steps dim depth; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "error: --${v//_/-} must be a positive integer (got '${!v}')" >&2; exit 2; }
done
[ $((tokens % seq_len)) -eq 0 ] || { echo "error: --tokens $tokens is not a multiple of --seq-len $seq_len" >&2; exit 2; }
seqs=$((tokens / seq_len))
IFS=, read -r -a mode_list <<<"$modes"
for m in "${mode_list[@]}"; do
    case $m in eager-fp32|eager-bf16|compiled-bf16|compiled-fp32) ;;
        *) echo "error: --modes: unknown mode '$m' (eager-fp32, eager-bf16, compiled-bf16, compiled-fp32)" >&2; exit 2 ;;
    esac
done
[ "$dev" = cuda ] || [ "$dev" = cpu ] || { echo "error: --device must be cuda or cpu" >&2; exit 2; }
[ -z "$log" ] || mkdir -p "$log"

# PyTorch with a GPU is required: it is two of the three sides
gpu=$(python3 - "$dev" 2>&1 <<'EOF'
import sys
try:
    import torch
except ImportError:
    sys.exit("no PyTorch: python3 cannot import torch")
if sys.argv[1] == "cpu":
    print("cpu (testing this script)")
elif not torch.cuda.is_available():
    sys.exit(f"PyTorch {torch.__version__} sees no GPU")
else:
    print(torch.cuda.get_device_name())
EOF
) || { echo "compare-gpu: error: $gpu" >&2; exit 1; }
echo "compare-gpu: gpu=\"$gpu\" model=$model d=$dim L=$depth rounds=$rounds T=$seq_len tokens_per_step=$tokens modes=$modes splits=$splits"

# flash.c: present, and with the CUDA backend?
why_no_c=""
if [ $flash_c -eq 0 ]; then
    why_no_c="left out (--no-flash-c)"
elif [ ! -x "$train" ]; then
    why_no_c="$train not found: build it first (make; CUDA support needs nvcc and cuBLAS)"
elif ! "$train" --help 2>&1 | grep -q -- '--device' || ! "$train" --help 2>&1 | grep -q -- '--precision'; then
    why_no_c="$train has no --device/--precision options (this build has no CUDA backend yet)"
fi
[ -z "$why_no_c" ] || echo "compare-gpu: flash.c side skipped: $why_no_c"

# the reference: importable?
ref_args=()
[ -z "$ref_dir" ] || ref_args=(--ref "$ref_dir")
why_no_ref=""
if [ "$use_ref" = 0 ]; then
    why_no_ref="left out (--no-ref)"
elif ! err=$(python3 - "${ref_dir:-${FLASH_PYTORCH_REF:-ref}}" "$use_ref" 2>&1 <<'EOF'
import os, sys
d = sys.argv[1]
if os.path.isdir(os.path.join(d, "flash_pytorch")):
    sys.path.insert(0, d)
elif sys.argv[2] == "1":
    sys.exit(f"{d} has no flash_pytorch/ (scripts/get_flash_pytorch_ref.sh makes it)")
import einops, rotary_embedding_torch, flash_pytorch.autoregressive_wrapper
EOF
    ); then
    why_no_ref="FLASH-pytorch cannot be imported ($(tail -1 <<<"$err"))"
    [ "$use_ref" = 1 ] && { echo "compare-gpu: error: --ref given, but $why_no_ref" >&2; exit 1; }
fi
[ -z "$why_no_ref" ] || echo "compare-gpu: FLASH-pytorch side skipped: $why_no_ref"

# the jobs of one round, flash.c's beside the PyTorch mode of its precision
jobs=()
add_c() { [ -n "$why_no_c" ] || jobs+=("c:$1"); }
add_c fp32
add_torch() {  # precision: the PyTorch jobs of its modes (the spec only for FLASH)
    local m
    for m in "${mode_list[@]}"; do
        [[ $m == *$1 ]] || continue
        [ "$model" = gau ] || jobs+=("spec:$m")
        [ -n "$why_no_ref" ] || jobs+=("ref:$m")
    done
}
add_torch fp32
add_c bf16
add_torch bf16

declare -A tok=() extra=() fails=() best=()
field() { sed -n "s/.*[ :]$1=\\([^ ]*\\).*/\\1/p" | tail -1; }
median() { sort -g | awk '{v[NR]=$1} END {if (NR) { m = NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2; printf (m >= 1000 ? "%.1f\n" : "%.4f\n"), m } }'; }

run_job() {  # $1 = job, $2 = round
    local job=$1 r=$2 kind=${1%%:*} what=${1#*:} cmd out rc=0 last t
    case $kind in
        c) cmd=("$train" bench --device "$dev" --precision "$what" --preset flash-pytorch
                --batch "$seqs" --accum 1 --seq-len "$seq_len" --dim "$dim" --depth "$depth")
           [ "$model" = flash ] || cmd+=(--model "$model")
           # shellcheck disable=SC2206
           [ -z "${TRAIN_BENCH_ARGS:-}" ] || cmd+=($TRAIN_BENCH_ARGS) ;;
        spec) cmd=(python3 scripts/flash_torch.py bench --device "$dev" --mode "$what" --batch "$seqs"
                   --accum 1 --seq-len "$seq_len" --steps "$steps" --splits "$splits" --dim "$dim" --depth "$depth") ;;
        ref) cmd=(python3 scripts/flash_pytorch_ref_bench.py "${ref_args[@]}" --device "$dev" --mode "$what"
                  --batch "$seqs" --accum 1 --seq-len "$seq_len" --steps "$steps" --splits "$splits"
                  --model "$model" --dim "$dim" --depth "$depth") ;;
    esac
    out=$(PYTHONUNBUFFERED=1 "${cmd[@]}" 2>&1) || rc=$?
    [ -z "$log" ] || { echo "\$ ${cmd[*]}"; echo "$out"; echo "(exit $rc)"; } >"$log/round$r-${job/:/-}.txt"
    last=$(grep -E '^(torch-)?bench: ' <<<"$out" | tail -1 || true)
    t=$(field tok_per_s <<<"$last")
    if [ $rc -ne 0 ] || [ -z "$t" ]; then
        echo "compare-gpu: $job failed in round $r (exit $rc; \`${cmd[*]}\`); its last lines:"
        tail -5 <<<"$out" | sed 's/^/    /'
        fails[$job]=$(( ${fails[$job]:-0} + 1 ))
        return 0
    fi
    echo "$job: $last"
    tok[$job]+="$t "
    if [ "$kind" = c ]; then
        extra[$job]+="$(field ratio <<<"$last") "
    else
        extra[$job]+="$(field B <<<"$last")x$(field A <<<"$last") "
        best[$job]+="$(field best_step_tok_per_s <<<"$last") "
    fi
}

for r in $(seq "$rounds"); do
    order=("${jobs[@]}")
    if [ $((r % 2)) -eq 0 ]; then
        order=(); for ((i = ${#jobs[@]} - 1; i >= 0; i--)); do order+=("${jobs[i]}"); done
    fi
    for j in "${order[@]}"; do run_job "$j" "$r"; done
done

declare -A med=()
for j in "${jobs[@]}"; do
    [ -n "${tok[$j]:-}" ] || continue
    med[$j]=$(tr ' ' '\n' <<<"${tok[$j]}" | grep . | median)
    n=$(wc -w <<<"${tok[$j]}")
    if [[ $j == c:* ]]; then note="cuBLAS ratios: ${extra[$j]% }"
    else
        b=$(tr ' ' '\n' <<<"${best[$j]:-}" | grep . | sort -g | tail -1 || true)
        note="fastest splits: ${extra[$j]% }${b:+; best single step $b tok/s}"
    fi
    echo "compare-gpu: median $j tok_per_s=${med[$j]} runs=$n ($note)${fails[$j]:+ failed=${fails[$j]}}"
done
for j in "${jobs[@]}"; do
    [ -n "${tok[$j]:-}" ] || echo "compare-gpu: $j: no successful run"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
say_ratio() {  # precision, flash.c job, torch job, label, goal note
    [ -n "${med[$2]:-}" ] && [ -n "${med[$3]:-}" ] || return 0
    echo "compare-gpu: $1 flash.c/$4 = $(ratio "${med[$2]}" "${med[$3]}")x$5"
}
say_ratio bf16 c:bf16 spec:compiled-bf16 compiled-bf16 " (the spec in PyTorch)"
say_ratio bf16 c:bf16 spec:eager-bf16 eager-bf16 " (the spec in PyTorch)"
say_ratio fp32 c:fp32 spec:eager-fp32 eager-fp32 " (the spec in PyTorch)"
say_ratio fp32 c:fp32 spec:compiled-fp32 compiled-fp32 " (the spec in PyTorch)"
say_ratio bf16 c:bf16 ref:compiled-bf16 ref-compiled-bf16 " (FLASH-pytorch itself)"
say_ratio bf16 c:bf16 ref:eager-bf16 ref-eager-bf16 " (FLASH-pytorch itself)"
say_ratio fp32 c:fp32 ref:eager-fp32 ref-eager-fp32 " (FLASH-pytorch itself)"
# the goals are against PyTorch at its fastest: of the spec's and FLASH-pytorch's medians, the higher
goal() {  # precision, flash.c job, mode, goal
    local best="" who="" w
    for w in spec ref; do
        [ -n "${med[$w:$3]:-}" ] || continue
        if [ -z "$best" ] || awk -v a="${med[$w:$3]}" -v b="$best" 'BEGIN{exit !(a > b)}'; then
            best=${med[$w:$3]} who=$w
        fi
    done
    [ -n "$best" ] && [ -n "${med[$2]:-}" ] || return 0
    echo "compare-gpu: goal $1 flash.c/fastest-pytorch-$3 = $(ratio "${med[$2]}" "$best")x (PyTorch: $who, $best tok/s; goal >= $4x)"
}
goal bf16 c:bf16 compiled-bf16 1.5
if [ "$model" = gau ]; then goal fp32 c:fp32 eager-fp32 1.5; else goal fp32 c:fp32 eager-fp32 2; fi
# and against PyTorch's best single step of all its runs (issue 21's measure)
for m in "${mode_list[@]}"; do
    p=${m##*-}
    bs=$(for w in spec ref; do tr ' ' '\n' <<<"${best[$w:$m]:-}"; done | grep . | sort -g | tail -1 || true)
    [ -n "$bs" ] && [ -n "${med[c:$p]:-}" ] &&
        echo "compare-gpu: $p flash.c/best-step-pytorch-$m = $(ratio "${med[c:$p]}" "$bs")x (PyTorch's best single step $bs tok/s)"
done
if [ -n "${extra[c:fp32]:-}" ]; then
    cr=$(tr ' ' '\n' <<<"${extra[c:fp32]}" | grep . | median || true)
    [ -z "$cr" ] || echo "compare-gpu: fp32 flash.c ratio to the same run's cuBLAS fp32 rate = $cr (median; goal >= 0.6)"
fi
for m in "${mode_list[@]}"; do
    [ -n "${med[spec:$m]:-}" ] && [ -n "${med[ref:$m]:-}" ] &&
        echo "compare-gpu: $m spec-in-PyTorch/FLASH-pytorch = $(ratio "${med[spec:$m]}" "${med[ref:$m]}")x"
done
[ -z "$why_no_c" ] || echo "compare-gpu: no flash.c ratios: $why_no_c"
exit 0
