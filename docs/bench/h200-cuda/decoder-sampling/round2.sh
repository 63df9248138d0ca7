nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
./build/f32/test_cuda 2>&1 | grep -v "^ok" | tail -25
./train --preset flash-pytorch --device cuda --precision bf16 --steps 2 --eval-every 0 --sample-every 0 --out /tmp/ck shared/data/enwik8-head.gz > /dev/null 2>&1 || echo CKFAIL
B="sample /tmp/ck --bench --device cuda"
for p in bf16 fp32; do for n in 1 2; do for i in 1 2; do
 echo "== n=$n $p rep $i"
 ./train $B --num-samples $n --precision $p 2>&1 | grep sample-bench
 FLASH_CUDA_DECODE_SAMPLE=0 ./train $B --num-samples $n --precision $p 2>&1 | grep sample-bench
done; done; done
FLASH_CUDA_DECODE_PROFILE=1 FLASH_CUDA_DECODE_SAMPLE=0 ./train $B --num-samples 1 2>&1 | grep -v "^\s*positions"
./train $B --num-samples 64 2>&1 | grep sample-bench
for n in 1 2 3; do for p in bf16 fp32; do
 a=$(./train sample /tmp/ck --device cuda --precision $p --num-samples $n --len 600 --seed 5 2>/dev/null | md5sum)
 b=$(FLASH_CUDA_DECODE_SAMPLE=0 ./train sample /tmp/ck --device cuda --precision $p --num-samples $n --len 600 --seed 5 2>/dev/null | md5sum)
 echo "md5 n=$n $p device=$a host=$b"
done; done
