"""scripts/flash_pytorch_ref_bench.py: the same bench as `flash_torch.py bench`, on the
reference implementation itself, FLASH-pytorch 0.1.9 (lucidrains), through its
AutoregressiveWrapper, as train.py builds it:

    FLASHTransformer(num_tokens=256, dim=512, depth=8, causal=True, group_size=256,
                     shift_tokens=True, laplace_attn_fn=True)

The package is not part of this repository. Give the folder that holds `flash_pytorch/` and
`rotary_embedding_torch/` with --ref DIR or FLASH_PYTORCH_REF=DIR (default: ref/ at the
repository root, where scripts/get_flash_pytorch_ref.sh puts them; git-ignored), or have both
installed (pip install flash-pytorch==0.1.9). Needs einops. Options and the last line
(`torch-bench: impl=flash-pytorch-0.1.9 ...`) are flash_torch.py bench's.
"""
import argparse, os, sys

sys.dont_write_bytecode = True  # no scripts/__pycache__ from importing flash_torch
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import flash_torch  # noqa: E402  (the shared bench harness)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", default=os.environ.get("FLASH_PYTORCH_REF"),
                   help="folder holding flash_pytorch/ and rotary_embedding_torch/ "
                        "(default: $FLASH_PYTORCH_REF, else ref/ if present, else installed packages)")
    flash_torch.add_bench_args(p)
    a = p.parse_args()
    ref = a.ref
    if ref is None and os.path.isdir(os.path.join(HERE, "..", "ref", "flash_pytorch")):
        ref = os.path.join(HERE, "..", "ref")
    if ref is not None:
        if not os.path.isdir(os.path.join(ref, "flash_pytorch")):
            sys.exit(f"error: {ref} has no flash_pytorch/ (scripts/get_flash_pytorch_ref.sh makes it)")
        sys.path.insert(0, os.path.abspath(ref))
    try:
        from flash_pytorch import FLASHTransformer
        from flash_pytorch.autoregressive_wrapper import AutoregressiveWrapper
    except ImportError as e:
        sys.exit(f"error: cannot import FLASH-pytorch ({e}); give --ref DIR or FLASH_PYTORCH_REF, "
                 f"or install flash-pytorch==0.1.9 (it needs einops and rotary-embedding-torch)")
    import flash_pytorch
    where = os.path.dirname(os.path.abspath(flash_pytorch.__file__))
    source = os.path.join(where, "..", "SOURCE.txt")
    if os.path.exists(source):
        with open(source) as f:
            print("reference: " + "; ".join(l.strip() for l in f if l.strip()), flush=True)
    else:
        print(f"reference: flash_pytorch from {where}", flush=True)

    def make_model():
        return AutoregressiveWrapper(FLASHTransformer(num_tokens=256, dim=512, depth=8, causal=True,
                                                      group_size=256, shift_tokens=True,
                                                      laplace_attn_fn=True))

    flash_torch.run_bench(make_model, a, "flash-pytorch-0.1.9")


if __name__ == "__main__":
    main()
