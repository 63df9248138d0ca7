# round 3: the GPU suite, sanitizers on the new sampling paths, ncu of the persistent kernel
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
./train --preset flash-pytorch --device cuda --precision bf16 --steps 2 --eval-every 0 --sample-every 0 --out /tmp/ck shared/data/enwik8-head.gz > /dev/null 2>&1 || echo CKFAIL
./train --preset flash-pytorch --dim 256 --depth 2 --qk-dim 64 --group-size 64 --device cuda --precision bf16 --steps 2 --eval-every 0 --sample-every 0 --out /tmp/cks shared/data/enwik8-head.gz > $OUT/cks.log 2>&1 || echo CKSFAIL
( for p in bf16 fp32; do for n in 1 2 4; do
  echo "== racecheck n=$n $p"; timeout 60 compute-sanitizer --tool racecheck ./train sample /tmp/cks --len 300 --device cuda --precision $p --num-samples $n --seed 3 2>&1 | grep -v "^[ -~]\{0,0\}$" | tail -3
  echo "== memcheck n=$n $p"; timeout 60 compute-sanitizer --tool memcheck ./train sample /tmp/cks --len 300 --device cuda --precision $p --num-samples $n --seed 3 2>&1 | tail -2
 done; done
 echo "== memcheck 64 seqs bf16"; timeout 90 compute-sanitizer --tool memcheck ./train sample /tmp/cks --len 300 --device cuda --num-samples 64 --seed 3 2>&1 | tail -2
) > $OUT/san.log 2>&1
timeout 120 ncu --clock-control none -k regex:dec_persistent_kernel -c 2 --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis --section LaunchStats ./train sample /tmp/ck --len 300 --device cuda --seed 3 > $OUT/ncu_persistent_sampling.txt 2>&1
timeout 150 ncu --clock-control none --metrics gpu__time_duration.sum --csv ./train sample /tmp/ck --len 41 --device cuda --num-samples 64 --seed 3 > $OUT/ncu64.csv 2>/dev/null
python3 scripts/ncu_table.py $OUT/ncu64.csv 40 > $OUT/ncu64_table.txt 2>&1; rm -f $OUT/ncu64.csv
bash tests/run_cuda.sh shared/fixtures shared/data/enwik8-head.gz > $OUT/run_cuda.log 2>&1
tail -1 $OUT/run_cuda.log; grep -E "==|ERROR SUMMARY|hazard|RACECHECK SUMMARY" $OUT/san.log; head -30 $OUT/ncu64_table.txt; grep -E "Duration|Warp Cycles|Stall|Issued|L2 Hit|Memory Throughput" $OUT/ncu_persistent_sampling.txt | head -30
