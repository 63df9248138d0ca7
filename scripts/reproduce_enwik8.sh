#!/usr/bin/env bash
# scripts/reproduce_enwik8.sh [options]: the autoregressive enwik8 result in one command.
#
#   1. fetch enwik8 and check it (scripts/get_enwik8.sh: md5 of the 10^8 bytes), unless
#      --data FILE names a copy;
#   2. build ./train (with CUDA when nvcc is found) and train the default recipe (./train
#      --help: 100,000 steps of 16,384 tokens) on the best device (--device auto: the GPU
#      when there is one);
#   3. evaluate the test split (./train eval: every byte predicted once, bpc);
#   4. write DIR/results.md: bpc on the test and validation splits, training time, tokens,
#      device and the exact commands.
# A stopped run continues where it left off: run the same command again (it resumes from
# DIR's newest checkpoint with the settings saved there; of the other flags only --threads,
# --device and --precision still apply, the rest are the run's already). A finished run is
# evaluated again; a run stopped before its first checkpoint starts over.
#
# Options (the rest go to ./train unchanged, e.g. --precision fp32):
#   --data FILE    use this enwik8 (.gz or raw) instead of downloading
#   --out DIR      run directory (default runs/enwik8)
#   --steps N      a shorter schedule for a trial (default: the recipe's 100,000), with a
#                  warmup of N/10 steps
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "reproduce_enwik8: error: $*" >&2; exit 1; }

data="" out="runs/enwik8" steps="" extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --data) [ $# -ge 2 ] || die "--data needs a FILE"; data=$2; shift 2 ;;
        --out) [ $# -ge 2 ] || die "--out needs a DIR"; out=$2; shift 2 ;;
        --steps) [ $# -ge 2 ] || die "--steps needs N"; steps=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) extra+=("$1"); shift ;;
    esac
done

if [ -z "$data" ]; then
    bash scripts/get_enwik8.sh data
    data=data/enwik8.gz
fi
[ -f "$data" ] || die "no data file $data"

# SKIP_BUILD=1: use the ./train already built (a machine that runs but does not build)
[ "${SKIP_BUILD:-0}" = 1 ] || make train >/dev/null || die "the build failed (run make to see why)"
train=${FLASH_TRAIN_BIN:-./train}

args=()
# a shortened schedule keeps the recipe's shape: warmup a tenth of it (flags given later win)
[ -n "$steps" ] && args+=(--steps "$steps" --warmup "$(( steps / 10 > 0 ? steps / 10 : 1 ))")
t0=$(date +%s)
if ls "$out"/ckpt-*.bin >/dev/null 2>&1; then
    # --resume takes the run's saved settings: pass on only the flags it accepts
    keep=() dropped=() i=0
    while [ $i -lt ${#extra[@]} ]; do
        a=${extra[$i]}
        case "$a" in
            --threads|--device|--precision) keep+=("$a" "${extra[$((i + 1))]:-}"); i=$((i + 2)) ;;
            --threads=*|--device=*|--precision=*) keep+=("$a"); i=$((i + 1)) ;;
            *) dropped+=("$a"); i=$((i + 1)) ;;
        esac
    done
    echo "reproduce_enwik8: resuming $out${dropped[*]+ (its saved settings stand; not passed on: ${dropped[*]})}"
    "$train" --resume "$out" "$data" "${keep[@]+"${keep[@]}"}" | tee -a "$out/train.log"
else
    # no checkpoint: nothing of a run to keep (a run killed before its first checkpoint)
    ow=()
    if [ -e "$out/config.json" ] || [ -e "$out/metrics.csv" ]; then
        ow=(--overwrite)
        echo "reproduce_enwik8: $out holds no checkpoint: starting over"
    fi
    mkdir -p "$out"
    "$train" "${args[@]+"${args[@]}"}" "${extra[@]+"${extra[@]}"}" "${ow[@]+"${ow[@]}"}" --out "$out" "$data" | tee "$out/train.log"
fi
t1=$(date +%s)

test_line=$("$train" eval "$out" "$data" --split test | grep '^eval:')
val_line=$("$train" eval "$out" "$data" --split val | grep '^eval:')
field() { echo "$1" | sed "s/.*$2=\([^ ]*\).*/\1/"; }
last=$(tail -1 "$out/metrics.csv")
step=$(echo "$last" | cut -d, -f1)
tokens=$(echo "$last" | cut -d, -f2)
elapsed=$(echo "$last" | cut -d, -f9)
device=$(grep -m1 '^device:' "$out/train.log" | sed 's/^device: //')

cat > "$out/results.md" <<EOF
# enwik8, autoregressive, byte level: flash.c

| split | bpc | bytes predicted |
|---|---|---|
| test | $(field "$test_line" bpc) | $(field "$test_line" bytes) |
| validation | $(field "$val_line" bpc) | $(field "$val_line" bytes) |

- steps: $step, training tokens: $tokens, training time: ${elapsed} s (this invocation: $((t1 - t0)) s)
- device: $device
- data: $data
- commands: \`./train ${args[*]-} ${extra[*]-} --out $out $data\`, then \`./train eval $out $data --split test\`
EOF
cat "$out/results.md"
