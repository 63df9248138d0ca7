"""scripts/flash_torch.py: FLASHTransformer written from docs (flash-spec.md) in PyTorch.

Same parameter names as FLASH-pytorch 0.1.9's state_dict, so that files exported by
`./train export` load here with strict=True. Used on the device machine (which has PyTorch
but not FLASH-pytorch) for: the speed comparisons (`bench`: on the CPU for issue 4,
scripts/bench_compare.sh; on a GPU, `--device cuda --mode eager-fp32|eager-bf16|compiled-bf16
--splits`, for issue 12, scripts/bench_compare_gpu.sh), checking exports (`check-export
FILE`), and making extra parity fixtures of other shapes (`fixture DIR`).
"""
import argparse, json, math, os, sys, time

import torch
import torch.nn as nn
import torch.nn.functional as F


class ScaleNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.scale, self.eps = dim ** -0.5, eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x):
        norm = torch.norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


class ScaledSinuEmbedding(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim)))

    def forward(self, x):
        t = torch.arange(x.shape[1], device=x.device).type_as(self.inv_freq)
        sinu = torch.einsum("i,j->ij", t, self.inv_freq)
        return torch.cat((sinu.sin(), sinu.cos()), dim=-1) * self.scale


class RelPosBias(nn.Module):
    def __init__(self, scale, num_buckets=32, max_distance=128):
        super().__init__()
        self.scale, self.num_buckets, self.max_distance = scale, num_buckets, max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, 1)

    def bucket(self, n):  # n = i - j (query minus key), causal
        n = n.clamp(min=0)
        max_exact = self.num_buckets // 2
        large = max_exact + (torch.log(n.float() / max_exact) / math.log(self.max_distance / max_exact)
                             * (self.num_buckets - max_exact)).long()
        large = large.clamp(max=self.num_buckets - 1)
        return torch.where(n < max_exact, n, large)

    def forward(self, C, device):
        pos = torch.arange(C, device=device)
        b = self.bucket(pos[:, None] - pos[None, :])
        return self.relative_attention_bias(b).squeeze(-1) * self.scale


class Rotary(nn.Module):
    def __init__(self, r):
        super().__init__()
        self.freqs = nn.Parameter(1.0 / (10000 ** (torch.arange(0, r, 2).float() / r)), requires_grad=False)

    def forward(self, x):  # x: (..., n, s); interleaved pairs on the first r features
        n, r = x.shape[-2], self.freqs.shape[0] * 2
        t = torch.arange(n, device=x.device).type_as(self.freqs)
        ang = torch.einsum("i,j->ij", t, self.freqs).repeat_interleave(2, dim=-1)
        xr, xp = x[..., :r], x[..., r:]
        u, w = xr[..., 0::2], xr[..., 1::2]
        half = torch.stack((-w, u), dim=-1).flatten(-2)
        return torch.cat((xr * ang.cos() + half * ang.sin(), xp), dim=-1)


class OffsetScale(nn.Module):
    def __init__(self, dim, heads=4):
        super().__init__()
        self.gamma = nn.Parameter(torch.randn(heads, dim) * 0.02)
        self.beta = nn.Parameter(torch.zeros(heads, dim))

    def forward(self, x):
        return (torch.einsum("...d,hd->...hd", x, self.gamma) + self.beta).unbind(dim=-2)


class FLASH(nn.Module):
    def __init__(self, dim, group_size, query_key_dim, expansion_factor, norm_type, shift_tokens,
                 laplace_attn_fn, rotary):
        super().__init__()
        hidden = int(expansion_factor * dim)
        self.group_size, self.shift_tokens, self.laplace = group_size, shift_tokens, laplace_attn_fn
        self.norm = ScaleNorm(dim) if norm_type == "scalenorm" else nn.LayerNorm(dim)
        self.rotary_pos_emb = rotary
        self.rel_pos_bias = RelPosBias(query_key_dim ** 0.5)
        self.to_hidden = nn.Sequential(nn.Linear(dim, hidden * 2), nn.SiLU())
        self.to_qk = nn.Sequential(nn.Linear(dim, query_key_dim), nn.SiLU())
        self.qk_offset_scale = OffsetScale(query_key_dim, heads=4)
        self.to_out = nn.Linear(hidden, dim)

    def attn_fn(self, x):
        if self.laplace:
            mu, std = math.sqrt(0.5), math.sqrt((4 * math.pi) ** -1)
            return (1 + torch.special.erf((x - mu) / (std * math.sqrt(2)))) * 0.5
        return F.relu(x) ** 2

    def forward(self, x):
        b, n, C = x.shape[0], x.shape[1], self.group_size
        xn = self.norm(x)
        if self.shift_tokens:
            xs, xp = xn.chunk(2, dim=-1)
            xn = torch.cat((F.pad(xs, (0, 0, 1, -1)), xp), dim=-1)
        v, gate = self.to_hidden(xn).chunk(2, dim=-1)
        qk = self.to_qk(xn)
        quad_q, lin_q, quad_k, lin_k = map(self.rotary_pos_emb, self.qk_offset_scale(qk))
        pad = (C - n % C) % C
        mask = torch.ones(b, n, dtype=torch.bool, device=x.device)
        if pad:
            quad_q, quad_k, lin_q, lin_k, v = (F.pad(t, (0, 0, 0, pad)) for t in (quad_q, quad_k, lin_q, lin_k, v))
            mask = F.pad(mask, (0, pad), value=False)
        G = (n + pad) // C
        quad_q, quad_k, lin_q, lin_k, v = (t.reshape(b, G, C, t.shape[-1]) for t in (quad_q, quad_k, lin_q, lin_k, v))
        mask = mask.reshape(b, G, 1, C)
        sim = torch.einsum("bgid,bgjd->bgij", quad_q, quad_k) / C
        sim = sim + self.rel_pos_bias(C, x.device)
        attn = self.attn_fn(sim)
        attn = attn.masked_fill(~mask, 0.0)
        causal = torch.ones(C, C, dtype=torch.bool, device=x.device).triu(1)
        attn = attn.masked_fill(causal, 0.0)
        quad_out = torch.einsum("bgij,bgjd->bgid", attn, v)
        lin_kv = torch.einsum("bgnd,bgne->bgde", lin_k, v) / C
        lin_kv = F.pad(lin_kv.cumsum(dim=1), (0, 0, 0, 0, 1, -1))
        lin_out = torch.einsum("bgde,bgnd->bgne", lin_kv, lin_q)
        out = (quad_out + lin_out).reshape(b, G * C, -1)[:, :n]
        return self.to_out(gate * out) + x


class FLASHTransformer(nn.Module):
    def __init__(self, num_tokens=256, dim=512, depth=8, group_size=256, query_key_dim=128,
                 expansion_factor=2.0, causal=True, norm_type="scalenorm", shift_tokens=True,
                 laplace_attn_fn=True):
        super().__init__()
        assert causal
        self.token_emb = nn.Embedding(num_tokens, dim)
        self.abs_pos_emb = ScaledSinuEmbedding(dim)
        rotary = Rotary(min(32, query_key_dim))  # shared by every layer, as in FLASH-pytorch
        self.layers = nn.ModuleList([FLASH(dim, group_size, query_key_dim, expansion_factor, norm_type,
                                           shift_tokens, laplace_attn_fn, rotary) for _ in range(depth)])
        self.to_logits = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_tokens))

    def forward(self, x):
        h = self.token_emb(x)
        h = self.abs_pos_emb(h) + h
        for layer in self.layers:
            h = layer(h)
        return self.to_logits(h)


def loss_of(model, tokens):
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:]), logits


class LossOf(nn.Module):
    """tokens (b, T+1) -> the mean next-byte cross-entropy, as FLASH-pytorch's
    AutoregressiveWrapper.forward (what train.py calls, and what its users compile)."""
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, tokens):
        logits = self.net(tokens[:, :-1])
        return F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:])


MODES = ("eager-fp32", "eager-bf16", "compiled-bf16", "compiled-fp32")


def add_bench_args(b):
    """The bench options, shared with scripts/flash_pytorch_ref_bench.py."""
    b.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    b.add_argument("--mode", choices=MODES, default="eager-fp32",
                   help="fp32: no TF32 anywhere; bf16: torch.autocast(bfloat16) with fp32 master "
                        "weights; compiled: torch.compile(model) (static shapes) (default eager-fp32)")
    b.add_argument("--threads", type=int, default=2, help="CPU threads (--device cpu)")
    b.add_argument("--steps", type=int, default=None, help="timed steps (default 5 on cpu, 20 on cuda)")
    b.add_argument("--warmup", type=int, default=None,
                   help="untimed steps first (default 2; 3 when compiled: the first one compiles)")
    b.add_argument("--batch", type=int, default=4, help="sequences per micro-batch B")
    b.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step A")
    b.add_argument("--seq-len", type=int, default=1024)
    b.add_argument("--optim", choices=("adam", "adamw"), default=None,
                   help="adam: train.py's Adam(lr 2e-4); adamw: AdamW(lr 1e-4), as ./train bench on "
                        "the CPU (default: adamw on cpu, adam on cuda)")
    b.add_argument("--splits", nargs="?", const="auto", default=None, metavar="BxA,...",
                   help="try these splits of one step into A micro-batches of B sequences (same "
                        "tokens per step) and report the fastest; alone: B*A sequences as "
                        "S x 1, S/2 x 2, S/4 x 4 (16x1,8x2,4x4 for --batch 16)")


def parse_splits(a):
    if a.splits is None:
        return [(a.batch, a.accum)]
    seqs = a.batch * a.accum
    if a.splits == "auto":
        out = []
        for k in range(3):
            if seqs % (1 << k) == 0 and (seqs >> k, 1 << k) not in out:
                out.append((seqs >> k, 1 << k))
        return out
    out = []
    for s in a.splits.split(","):
        try:
            b, n = (int(x) for x in s.lower().split("x"))
        except ValueError:
            sys.exit(f"error: --splits: {s!r} is not BxA (e.g. 16x1,8x2,4x4)")
        if b < 1 or n < 1:
            sys.exit(f"error: --splits: {s!r}: B and A must be at least 1")
        out.append((b, n))
    if len({b * n for b, n in out}) > 1:
        print("warning: --splits with different tokens per step; tokens/s still compares them",
              file=sys.stderr)
    return out


def device_name(dev):
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def set_fp32_exact():
    """No TF32 in matrix products or cuDNN: fp32 means fp32. PyTorch >= 2.9 has the
    fp32_precision settings (mixing them with allow_tf32 can raise); older ones allow_tf32."""
    m, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if hasattr(m, "fp32_precision"):
        m.fp32_precision = "ieee"
        said = f"matmul.fp32_precision={m.fp32_precision}"
        if conv is not None and hasattr(conv, "fp32_precision"):
            conv.fp32_precision = "ieee"
            said += f" cudnn.conv.fp32_precision={conv.fp32_precision}"
        return said
    m.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return f"matmul.allow_tf32={m.allow_tf32} cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}"


def median_of(times):
    times = sorted(times)
    n = len(times)
    return times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])


def bench_split(make_model, a, dev, B, A):
    """One optimizer step = A micro-batches of B sequences of T tokens: forward and backward
    of each (the gradients averaged), global clipping 0.5, the optimizer. Returns a dict."""
    compiled, bf16 = a.mode.startswith("compiled"), a.mode.endswith("bf16")
    if compiled:
        torch._dynamo.reset()  # each split compiles afresh, for its own shapes
    torch.manual_seed(0)
    model = make_model().to(dev)
    fn = torch.compile(model, dynamic=False) if compiled else model
    if a.optim == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    # one tensor per micro-batch (not views of one: a compiled model sees the same input)
    tokens = [torch.randint(0, 256, (B, a.seq_len + 1), generator=g).to(dev) for _ in range(A)]
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step():
        for i in range(A):
            if bf16:
                with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
                    loss = fn(tokens[i])
            else:
                loss = fn(tokens[i])
            (loss if A == 1 else loss / A).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    first = None
    for w in range(a.warmup):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        if w == 0:
            first = time.perf_counter() - t0
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for _ in range(a.steps):
        sync()
        t0 = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - t0)
    med = median_of(times)
    r = dict(B=B, A=A, step_s=med, tok_per_s=B * A * a.seq_len / med, first_s=first,
             min_s=min(times), max_s=max(times), loss=float(loss.detach().float().item()),
             peak_mib=torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else 0.0)
    del model, fn, opt, tokens
    if cuda:
        torch.cuda.empty_cache()
    return r


def run_bench(make_model, a, impl):
    """The bench of `make_model()` (a module: tokens (b, T+1) -> loss) for one mode, over one
    split or several; the last line (torch-bench: ...) is machine-readable."""
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"error: --device cuda, but this PyTorch ({torch.__version__}) sees no GPU")
    if a.mode.startswith("compiled") and not hasattr(torch, "compile"):
        sys.exit(f"error: --mode {a.mode} needs torch.compile (PyTorch >= 2.0; this is {torch.__version__})")
    if a.steps is None:
        a.steps = 20 if dev.type == "cuda" else 5
    if a.warmup is None:
        a.warmup = 3 if a.mode.startswith("compiled") else 2
    a.warmup = max(a.warmup, 1)
    if a.optim is None:
        a.optim = "adam" if dev.type == "cuda" else "adamw"
    if dev.type == "cpu":
        torch.set_num_threads(a.threads)
    precision = "autocast bfloat16, fp32 master weights" if a.mode.endswith("bf16") else "fp32"
    if dev.type == "cuda" and a.mode.endswith("fp32"):
        precision += ", " + set_fp32_exact()
    name = device_name(dev)
    key = "gpu" if dev.type == "cuda" else "cpu"
    splits = parse_splits(a)
    print(f"torch {torch.__version__}; {impl}; device {a.device} ({name}); mode {a.mode} ({precision}); "
          f"optimizer {a.optim} + global clipping 0.5; T {a.seq_len}; {a.warmup} warm-up and "
          f"{a.steps} timed steps per split", flush=True)
    extra = f" threads={a.threads}" if dev.type == "cpu" else ""
    peak = (lambda r: f"peak {r['peak_mib']:,.0f} MiB allocated; ") if dev.type == "cuda" else (lambda r: "")
    results = []
    for B, A in splits:
        r = bench_split(make_model, a, dev, B, A)
        results.append(r)
        line = (f"impl={impl} mode={a.mode} device={a.device} B={B} A={A} T={a.seq_len} "
                f"tok_per_s={r['tok_per_s']:.1f} step_s={r['step_s']:.5f}{extra} optim={a.optim} "
                f"steps={a.steps} torch={torch.__version__} {key}=\"{name}\"")
        print(f"  {B} x {A} x {a.seq_len}: median step {r['step_s']:.4f} s (min {r['min_s']:.4f}, "
              f"max {r['max_s']:.4f}), {r['tok_per_s']:,.0f} tokens/s; first step {r['first_s']:.1f} s; "
              f"{peak(r)}last loss {r['loss']:.4f}", flush=True)
        if len(splits) > 1:
            print("torch-bench-split: " + line, flush=True)
    best = max(results, key=lambda r: r["tok_per_s"])
    tried = ",".join(f"{r['B']}x{r['A']}" for r in results)
    print(f"torch-bench: impl={impl} mode={a.mode} device={a.device} B={best['B']} A={best['A']} "
          f"T={a.seq_len} tok_per_s={best['tok_per_s']:.1f} step_s={best['step_s']:.5f}{extra} "
          f"best_step_tok_per_s={best['B'] * best['A'] * a.seq_len / best['min_s']:.1f} "
          f"optim={a.optim} steps={a.steps} splits={tried} torch={torch.__version__} {key}=\"{name}\"",
          flush=True)


def cmd_bench(a):
    if a.dim < 2 or a.dim % 2 or a.depth < 1:
        sys.exit(f"error: --dim must be even and >= 2, --depth >= 1 (got {a.dim}, {a.depth})")
    impl = "spec" if (a.dim, a.depth) == (512, 8) else f"spec-d{a.dim}-L{a.depth}"
    run_bench(lambda: LossOf(FLASHTransformer(dim=a.dim, depth=a.depth)), a, impl)


def cmd_check_export(a):
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(a.file, "pt") as f:
        cfg = json.loads(f.metadata()["config"])
    model = FLASHTransformer(**cfg)
    sd = load_file(a.file)
    model.load_state_dict(sd, strict=True)
    tokens = torch.randint(0, cfg["num_tokens"], (1, 65))
    loss, _ = loss_of(model, tokens)
    print(f"check-export: {a.file} loaded with strict=True; {len(sd)} tensors; loss on random bytes {loss.item():.4f}")


def cmd_fixture(a):
    """A forward/backward fixture in float64, in the format of shared/fixtures."""
    from safetensors.torch import save_file
    cfg = json.loads(a.config)
    torch.manual_seed(a.seed)
    model = FLASHTransformer(**cfg).double()
    with torch.no_grad():  # move constant-initialised parameters so all gradients matter
        for name, p in model.named_parameters():
            if p.requires_grad and any(k in name for k in ("norm", "beta", "scale", "to_logits.0")):
                p.add_(0.1 * torch.randn_like(p))
    tokens = torch.randint(0, cfg["num_tokens"], (a.batch, a.seq_len + 1))
    loss, logits = loss_of(model, tokens)
    loss.backward()
    meta = {"config": json.dumps(cfg), "B": str(a.batch), "T": str(a.seq_len)}
    weights = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    expected = {"tokens": tokens, "logits": logits.detach().float(), "loss": loss.detach().float().reshape(1)}
    for name, p in model.named_parameters():
        if p.requires_grad:
            expected["grad." + name] = p.grad.float()
    os.makedirs(a.dir, exist_ok=True)
    save_file(weights, os.path.join(a.dir, a.name + ".weights.safetensors"), metadata={"config": meta["config"]})
    save_file(expected, os.path.join(a.dir, a.name + ".expected.safetensors"), metadata=meta)
    print(f"fixture {a.name}: loss {loss.item():.6f}")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="time training steps of the train.py model (CPU or CUDA)")
    add_bench_args(b)
    b.add_argument("--dim", type=int, default=512, help="model width (default 512, train.py's)")
    b.add_argument("--depth", type=int, default=8, help="layers (default 8)")
    c = sub.add_parser("check-export")
    c.add_argument("file")
    f = sub.add_parser("fixture")
    f.add_argument("dir")
    f.add_argument("name")
    f.add_argument("--config", required=True)
    f.add_argument("--batch", type=int, default=2)
    f.add_argument("--seq-len", type=int, default=50)
    f.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    {"bench": cmd_bench, "check-export": cmd_check_export, "fixture": cmd_fixture}[a.cmd](a)


if __name__ == "__main__":
    main()
