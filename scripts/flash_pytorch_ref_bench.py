"""scripts/flash_pytorch_ref_bench.py: the same bench as `flash_torch.py bench`, on the
reference implementation itself, FLASH-pytorch 0.1.9 (lucidrains), through its
AutoregressiveWrapper, as train.py builds it:

    FLASHTransformer(num_tokens=256, dim=512, depth=8, causal=True, group_size=256,
                     shift_tokens=True, laplace_attn_fn=True)

--dim and --depth change the size (as ./train bench --dim/--depth do). --model gau benches
FLASH-Quad instead: the same frame with FLASH-pytorch's own GAU layers
(GAU(dim, query_key_dim=128, expansion_factor=2, causal=True, laplace_attn_fn=True,
norm_klass=ScaleNorm)), built by tests/fixtures/reference/make_fixtures.py's
make_gau_transformer, the frame the gau fixtures come from; ./train bench --model gau
--preset flash-pytorch is its twin.

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
    p.add_argument("--model", choices=("flash", "gau"), default="flash",
                   help="flash: FLASHTransformer; gau: the same frame with GAU layers (FLASH-Quad)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--depth", type=int, default=8)
    flash_torch.add_bench_args(p)
    a = p.parse_args()
    if a.dim < 2 or a.dim % 2 or a.depth < 1:
        sys.exit(f"error: --dim must be even and >= 2, --depth >= 1 (got {a.dim}, {a.depth})")
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

    if a.model == "gau":
        sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures", "reference"))
        from make_fixtures import make_gau_transformer
        import flash_pytorch.flash_pytorch as fp

        def make_model():
            return AutoregressiveWrapper(make_gau_transformer(fp, 256, a.dim, a.depth, 128, 2.0, "scalenorm", True))
    else:
        def make_model():
            return AutoregressiveWrapper(FLASHTransformer(num_tokens=256, dim=a.dim, depth=a.depth, causal=True,
                                                          group_size=256, shift_tokens=True,
                                                          laplace_attn_fn=True))

    impl = "flash-pytorch-0.1.9" + ("-gau" if a.model == "gau" else "")
    if (a.dim, a.depth) != (512, 8):
        impl += f"-d{a.dim}-L{a.depth}"
    flash_torch.run_bench(make_model, a, impl)


if __name__ == "__main__":
    main()
