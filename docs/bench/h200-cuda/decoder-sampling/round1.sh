nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
./build/f32/test_cuda 2>&1 | grep -v "^ok" | tail -25
./train --preset flash-pytorch --device cuda --precision bf16 --steps 2 --eval-every 0 --sample-every 0 --out /tmp/ck shared/data/enwik8-head.gz > /dev/null 2>&1 || echo CKFAIL
B="sample /tmp/ck --bench --device cuda"
for n in 64 16 8; do FLASH_CUDA_DECODE_PROFILE=1 ./train $B --num-samples $n 2>&1 | grep -v "^\s*positions"; done
FLASH_CUDA_DECODE_PROFILE=1 ./train $B --num-samples 64 --precision fp32 2>&1 | grep -v "^\s*positions"
for i in 1 2; do
 ./scratch/train_base $B --num-samples 64 2>&1 | grep sample-bench
 ./train $B --num-samples 64 2>&1 | grep sample-bench
 FLASH_CUDA_DECODE_SAMPLE=0 ./train $B --num-samples 64 2>&1 | grep sample-bench
done
for n in 1 3 12 64 300; do for p in bf16 fp32; do
 a=$(./train sample /tmp/ck --device cuda --precision $p --num-samples $n --len 400 --seed 5 2>/dev/null | md5sum)
 b=$(FLASH_CUDA_DECODE_SAMPLE=0 ./train sample /tmp/ck --device cuda --precision $p --num-samples $n --len 400 --seed 5 2>/dev/null | md5sum)
 c=$(./scratch/train_base sample /tmp/ck --device cuda --precision $p --num-samples $n --len 400 --seed 5 2>/dev/null | md5sum)
 echo "md5 n=$n $p device=$a host=$b base=$c"
done; done
./train $B --num-samples 256 2>&1 | grep sample-bench
