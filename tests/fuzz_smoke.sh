#!/usr/bin/env bash
# tests/fuzz_smoke.sh FUZZ_DIR [SECONDS]: each libFuzzer harness (make fuzz-bins) for a few
# seconds from its seed corpus (fuzz/corpus/NAME, not modified). A harness that finds a crash
# fails. Without the binaries (clang lacks libFuzzer) it says SKIP and counts nothing.
# Prints "ok NAME (N executions)" / "FAIL NAME" and "RESULT passed=N failed=M".
set -u
dir=$1; secs=${2:-3}
passed=0; failed=0
for f in settings safetensors checkpoint data; do
    bin=$dir/fuzz_$f
    if [ ! -x "$bin" ]; then echo "SKIP fuzz_$f: not built (clang without libFuzzer; make fuzz-bins)"; continue; fi
    work=$(mktemp -d /tmp/flash-fuzz.XXXXXX)
    "$bin" -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$work/" "$work" "fuzz/corpus/$f" > "$work/log" 2>&1
    rc=$?
    n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
    if [ "$rc" -eq 0 ]; then echo "ok   fuzz_$f (${n:-?} executions in ${secs} s)"; passed=$((passed + 1))
    else echo "FAIL fuzz_$f: exit $rc"; grep -E 'ERROR|SUMMARY|runtime error' "$work/log" | head -5; failed=$((failed + 1)); fi
    rm -rf "$work"
done
echo "RESULT passed=$passed failed=$failed"
[ "$failed" -eq 0 ]
