#!/usr/bin/env bash
# tests/run.sh F32_DIR F64_DIR -- FIXTURES DATA
# Runs every test program (each prints "ok"/"FAIL"/"skip" lines and "RESULT passed=N failed=M",
# with " skipped=K" where tests could not run here, e.g. the GPU tests without a GPU),
# then prints the suite's total as its last line: "N passed, N failed".
# A program that crashes or prints no RESULT line counts as one failure.
set -u
f32=$1; f64=$2; shift 3
fixtures=$1; data=$2
passed=0; failed=0; skipped=0
run_one() {  # name, command...
    local name=$1; shift
    local out rc
    out=$("$@" 2>&1); rc=$?
    printf '%s\n' "$out" | grep -v '^RESULT ' | sed "s|^|[$name] |"
    local line
    line=$(printf '%s\n' "$out" | grep '^RESULT ' | tail -1)
    if [ -z "$line" ]; then
        echo "[$name] FAIL: exited $rc without a RESULT line"
        failed=$((failed + 1)); return
    fi
    local p f
    p=$(echo "$line" | sed 's/.*passed=\([0-9]*\).*/\1/')
    f=$(echo "$line" | sed 's/.*failed=\([0-9]*\).*/\1/')
    s=$(echo "$line" | grep -o 'skipped=[0-9]*' | cut -d= -f2)
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + ${s:-0}))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "[$name] FAIL: exited $rc"; failed=$((failed + 1))
    fi
}
# the gradient checks come from F64_DIR; every other test from F32_DIR (one dir for both
# in the sanitizer pass)
bins=()
for bin in "$f32"/test_*; do
    case "$(basename "$bin")" in test_grad*) [ "$f32" != "$f64" ] && continue ;; esac
    bins+=("$bin")
done
if [ "$f32" != "$f64" ]; then bins+=("$f64"/test_grad*); fi
for bin in "${bins[@]}"; do
    [ -x "$bin" ] || continue
    run_one "$(basename "$bin")" "$bin" "$fixtures" "$data"
done
# the golden record (tests/golden.sh): outputs byte for byte as the record has them (the
# sanitizer build at -O1 gives the same bits)
run_one golden bash tests/golden.sh check "${FLASH_TRAIN_BIN:-./train}" "$data"
# the adversarial cases of issue 11 (failed writes, run directories, settings from files,
# wrong data, paths, signals) through the same binary
run_one robust bash tests/robust.sh "${FLASH_TRAIN_BIN:-./train}" "$data"
# a few seconds of each fuzzer (built by make test when clang has libFuzzer), once: in the
# first pass only
if [ "$f32" != "$f64" ]; then run_one fuzz bash tests/fuzz_smoke.sh build/fuzz 3; fi
if [ -x "$f32/parity" ]; then
    mkdir -p "$f32/parity-out"
    run_one parity "$f32/parity" "$fixtures" "$f32/parity-out"
    # FLASH-Quad (--model gau) against FLASH-pytorch's GAU (tests/fixtures/reference, in the repo)
    mkdir -p "$f32/parity-out-gau"
    run_one parity_gau "$f32/parity" tests/fixtures/reference/gau "$f32/parity-out-gau"
fi
# --linear-attn taylor against its own fixtures (tests/fixtures/reference/taylor, made by
# make_fixtures.py from the reference code), at the same tolerances
[ -x "$f32/parity" ] && run_one parity-taylor "$f32/parity" tests/fixtures/reference/taylor "$f32/parity-out"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
