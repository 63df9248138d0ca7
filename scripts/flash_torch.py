"""scripts/flash_torch.py: FLASHTransformer written from docs (flash-spec.md) in PyTorch.

Same parameter names as FLASH-pytorch 0.1.9's state_dict, so that files exported by
`./train export` load here with strict=True. Used on the device machine (which has PyTorch
but not FLASH-pytorch) for: the speed comparison of issue 4 (`bench`), checking exports
(`check-export FILE`), and making extra parity fixtures of other shapes (`fixture DIR`).
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


def cmd_bench(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = FLASHTransformer()
    tokens = torch.randint(0, 256, (a.batch, a.seq_len + 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = loss_of(model, tokens)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
    for _ in range(2):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    # the median step, as ./train bench reports: a moment of load elsewhere moves the mean
    times.sort()
    n = len(times)
    median = times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])
    tps = a.batch * a.seq_len / median
    print(f"torch-bench: tok_per_s={tps:.1f} threads={a.threads} steps={a.steps} batch={a.batch} "
          f"seq_len={a.seq_len} torch={torch.__version__}", flush=True)


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
    b = sub.add_parser("bench")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--steps", type=int, default=5)
    b.add_argument("--batch", type=int, default=4)
    b.add_argument("--seq-len", type=int, default=1024)
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
