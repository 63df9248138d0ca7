#!/usr/bin/env bash
# tests/run_cuda.sh FIXTURES DATA: the GPU suite (make test-cuda), for a machine with a GPU.
#
#  1. build/f32/test_cuda: every kernel against its CPU op, the model against the CPU
#     model on every option, the decoder against the forward, determinism, bf16;
#  2. the fixtures on the GPU (FLASH_DEVICE=cuda parity), at the CPU's tolerances;
#  3. the command line on the GPU: two runs give the same metrics.csv; a run killed with
#     SIGKILL and resumed gives the uninterrupted run's train_loss sequence bit for bit; a
#     GPU checkpoint evaluates on the CPU to the GPU's bpc; a CPU checkpoint resumes on
#     the GPU and says that the run is no longer bit-identical; the resume, the CPU
#     evaluation and ./train sample on the GPU for gau and taylor.
# Prints "ok"/"FAIL"/"skip" lines and ends with "N passed, N failed, N skipped".
set -u
fixtures=$1; data=$2
train=${FLASH_TRAIN_BIN:-./train}
passed=0; failed=0; skipped=0
work=$(mktemp -d /tmp/flash-cuda-test.XXXXXX)
trap 'rm -rf "$work"' EXIT

tally() {  # name, output of a program printing RESULT passed= failed= [skipped=]
    local name=$1 out=$2 rc=$3
    printf '%s\n' "$out" | grep -v '^RESULT ' | sed "s|^|[$name] |"
    local line
    line=$(printf '%s\n' "$out" | grep '^RESULT ' | tail -1)
    if [ -z "$line" ]; then echo "[$name] FAIL: exited $rc without a RESULT line"; failed=$((failed + 1)); return; fi
    local p f s
    p=$(echo "$line" | sed 's/.*passed=\([0-9]*\).*/\1/')
    f=$(echo "$line" | sed 's/.*failed=\([0-9]*\).*/\1/')
    s=$(echo "$line" | grep -o 'skipped=[0-9]*' | cut -d= -f2)
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + ${s:-0}))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then echo "[$name] FAIL: exited $rc"; failed=$((failed + 1)); fi
}
check() {  # name, condition already evaluated (0 = pass), message
    if [ "$2" -eq 0 ]; then echo "ok   $1"; passed=$((passed + 1)); else echo "FAIL $1: $3"; failed=$((failed + 1)); fi
}

out=$(build/f32/test_cuda 2>&1); tally test_cuda "$out" $?
if grep -q '^skip test_model_matches_cpu' <<<"$out"; then
    # no GPU (or no CUDA in this build): the command-line checks cannot run either
    echo "skip parity on the GPU and the command-line checks (no GPU)"
    skipped=$((skipped + 17))   # parity on the GPU (3 sets), 11 command-line checks, 3 under mpirun
    echo "$passed passed, $failed failed, $skipped skipped"
    [ "$failed" -eq 0 ]; exit
fi
out=$(FLASH_DEVICE=cuda build/f32/parity "$fixtures" "$work/parity" 2>&1); tally parity_cuda "$out" $?
# the variants' fixtures, made from the reference code (tests/fixtures/reference)
for v in gau taylor; do
    out=$(FLASH_DEVICE=cuda build/f32/parity tests/fixtures/reference/$v "$work/parity-$v" 2>&1); tally parity_cuda_$v "$out" $?
done

# a small model, long enough that a SIGKILL lands mid-run
small=(--dim 64 --depth 2 --group-size 32 --qk-dim 32 --batch 4 --accum 2 --seq-len 96 --warmup 10
       --steps 300 --eval-every 100 --sample-every 0 --log-every 100 --device cuda --precision fp32)
cols() { cut -d, -f1-7 "$1"; }           # metrics.csv without tok_per_s and elapsed_s
losses() { cut -d, -f1,4 "$1" | grep -v ',$'; }

"$train" "${small[@]}" --ckpt-every 0 --out "$work/a" "$data" >"$work/a.log" 2>&1
"$train" "${small[@]}" --ckpt-every 0 --out "$work/b" "$data" >"$work/b.log" 2>&1
cmp -s <(cols "$work/a/metrics.csv") <(cols "$work/b/metrics.csv")
check cli_two_runs_identical $? "metrics.csv of two runs differ"

"$train" "${small[@]}" --ckpt-every 25 --out "$work/c" "$data" >"$work/c.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do [ -e "$work/c/ckpt-00000100.bin" ] && break; sleep 0.02; done
kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
"$train" --resume "$work/c" "$data" >"$work/c2.log" 2>&1
cmp -s <(losses "$work/a/metrics.csv") <(losses "$work/c/metrics.csv")
check cli_sigkill_resume_bit_exact $? "train_loss after SIGKILL and --resume differs (log: $(tail -2 "$work/c2.log"))"

# the variants: SIGKILL and --resume bit-exact on the GPU too (gau with no groups, taylor
# at a small qk-dim), and the GPU checkpoint evaluates on the CPU to the GPU's bpc
variant_resume() {  # name, extra flags...
    local name=$1; shift
    local v=(--dim 64 --depth 2 --batch 4 --accum 2 --seq-len 96 --warmup 10 --steps 200 --eval-every 100
             --sample-every 0 --log-every 100 --device cuda --precision fp32 "$@")
    "$train" "${v[@]}" --ckpt-every 0 --out "$work/$name-a" "$data" >"$work/$name-a.log" 2>&1
    "$train" "${v[@]}" --ckpt-every 25 --out "$work/$name-c" "$data" >"$work/$name-c.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 600); do [ -e "$work/$name-c/ckpt-00000100.bin" ] && break; sleep 0.02; done
    kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    "$train" --resume "$work/$name-c" "$data" >"$work/$name-c2.log" 2>&1
    cmp -s <(losses "$work/$name-a/metrics.csv") <(losses "$work/$name-c/metrics.csv") &&
        [ "$(losses "$work/$name-a/metrics.csv" | wc -l)" -gt 100 ]
    check "cli_${name}_sigkill_resume_bit_exact" $? "train_loss after SIGKILL and --resume differs (log: $(tail -2 "$work/$name-c2.log"))"
    local g c
    g=$("$train" eval "$work/$name-a" "$data" --split val --device cuda 2>/dev/null | grep '^eval:' | sed 's/.*bpc=\([0-9.]*\).*/\1/')
    c=$("$train" eval "$work/$name-a" "$data" --split val --device cpu --threads 2 2>/dev/null | grep '^eval:' | sed 's/.*bpc=\([0-9.]*\).*/\1/')
    awk -v g="$g" -v c="$c" 'BEGIN { exit !(g != "" && c != "" && (g - c) < 1e-4 * c && (c - g) < 1e-4 * c) }'
    check "cli_${name}_gpu_checkpoint_on_cpu" $? "bpc on the GPU $g, on the CPU $c"
    "$train" sample "$work/$name-a" --device cuda --len 300 --num-samples 2 >"$work/$name-s.log" 2>&1
    local r=$?
    [ $r -eq 0 ] && [ "$(wc -c <"$work/$name-s.log")" -ge 600 ]
    check "cli_${name}_sample_on_gpu" $? "rc $r; $(tail -2 "$work/$name-s.log")"
}
variant_resume gau --model gau --qk-dim 32
variant_resume taylor --group-size 32 --qk-dim 16 --linear-attn taylor

g=$("$train" eval "$work/a" "$data" --split val --device cuda 2>/dev/null | grep '^eval:' | sed 's/.*bpc=\([0-9.]*\).*/\1/')
c=$("$train" eval "$work/a" "$data" --split val --device cpu --threads 2 2>/dev/null | grep '^eval:' | sed 's/.*bpc=\([0-9.]*\).*/\1/')
awk -v g="$g" -v c="$c" 'BEGIN { exit !(g != "" && c != "" && (g - c) < 1e-4 * c && (c - g) < 1e-4 * c) }'
check cli_gpu_checkpoint_on_cpu $? "bpc on the GPU $g, on the CPU $c"

cpu=(--dim 64 --depth 2 --group-size 32 --qk-dim 32 --batch 4 --accum 2 --seq-len 96 --warmup 10
     --steps 40 --eval-every 0 --sample-every 0 --ckpt-every 20 --device cpu --threads 2)
"$train" "${cpu[@]}" --out "$work/d" "$data" >"$work/d.log" 2>&1 &
pid=$!
for _ in $(seq 1 3000); do [ -e "$work/d/ckpt-00000020.bin" ] && break; sleep 0.02; done
kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
"$train" --resume "$work/d" "$data" --device cuda >"$work/d2.log" 2>&1
r=$?
grep -qi 'bit-identical' "$work/d2.log" && [ $r -eq 0 ] && grep -q '^40,' "$work/d/metrics.csv"
check cli_cpu_checkpoint_resumes_on_gpu $? "rc $r; $(tail -3 "$work/d2.log")"

"$train" bench --device cuda --precision bf16 --dim 64 --depth 2 --group-size 32 --qk-dim 32 --batch 4 \
    --seq-len 96 --steps 3 >"$work/bench.log" 2>&1
tail -1 "$work/bench.log" | grep -q '^bench: tok_per_s='
check cli_bench_cuda $? "$(tail -2 "$work/bench.log")"

# The data-parallel path on one GPU: mpirun -np 1 with FLASH_ALLREDUCE_ONE_RANK=1 runs the
# gradient sum (NCCL when built in) after every backward although one rank has nothing to
# add; the run must equal the plain process's bit for bit, and a checkpointed run resumed
# under mpirun must too.
if command -v mpirun >/dev/null 2>&1 && "$train" --help 2>&1 | grep -q 'This build has MPI'; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    mpi=(mpirun -np 1 --bind-to none -x FLASH_ALLREDUCE_ONE_RANK=1)
    "${mpi[@]}" "$train" "${small[@]}" --ckpt-every 0 --out "$work/n" "$data" >"$work/n.log" 2>&1
    r=$?
    want=communicator; "$train" --help 2>&1 | grep -q 'MPI and NCCL' || want=.
    cmp -s <(cols "$work/a/metrics.csv") <(cols "$work/n/metrics.csv") && [ $r -eq 0 ] && grep -q "$want" "$work/n.log"
    check cli_allreduce_one_rank_gpu $? "rc $r; metrics differ from the plain run or no NCCL line: $(grep -m2 -i 'nccl\|error' "$work/n.log")"
    "${mpi[@]}" "$train" "${small[@]}" --ckpt-every 25 --out "$work/p" "$data" >"$work/p.log" 2>&1 &
    for _ in $(seq 1 600); do [ -e "$work/p/ckpt-00000100.bin" ] && break; sleep 0.02; done
    pkill -9 -f -- "--out $work/p" 2>/dev/null; wait 2>/dev/null
    "${mpi[@]}" "$train" --resume "$work/p" "$data" >"$work/p2.log" 2>&1
    r=$?
    cmp -s <(losses "$work/a/metrics.csv") <(losses "$work/p/metrics.csv") && [ $r -eq 0 ]
    check cli_allreduce_one_rank_resume $? "rc $r; $(tail -2 "$work/p2.log")"
    # one rank more than the host's GPUs: refused, saying so and how to run
    ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
    timeout 120 mpirun -np $((ngpu + 1)) --bind-to none --oversubscribe "$train" "${small[@]}" --out "$work/q" \
        "$data" >"$work/q.log" 2>&1
    r=$?
    [ $r -ne 0 ] && grep -q "more MPI ranks run on the host than it has GPUs" "$work/q.log"
    check cli_more_ranks_than_gpus_refused $? "rc $r; $(grep -m2 -i 'error\|GPU' "$work/q.log")"
else
    echo "skip cli_allreduce_one_rank_gpu, cli_allreduce_one_rank_resume, cli_more_ranks_than_gpus_refused (no MPI in this build or no mpirun)"
    skipped=$((skipped + 3))
fi

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
