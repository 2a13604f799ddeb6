"""PyTorch-eager baseline for `rldt-vision bench pretrain --torch`.

Builds the same network as rldt-vision's FlowPolicy (ResNet-18 with GroupNorm + spatial
softmax, or the paper's ViT + spatial embedding; sinusoidal time embedding; residual MLP
velocity head) from the same config JSON, and times the same training step on a batch of
the same shapes: pixels u8 HWC -> f32 CHW, augmentation, flow loss, backward, AdamW, EMA.
Prints one JSON object. Written for this project; run by the Rust bench, not by hand.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def group_norm(c):
    return nn.GroupNorm(max(1, c // 16), c)


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = group_norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = group_norm(c_out)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False), group_norm(c_out))

    def forward(self, x):
        # In place as torchvision's ResNet does (and as the Rust trunk does).
        y = self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x)), inplace=True)))
        y += x if self.down is None else self.down(x)
        return F.relu(y, inplace=True)


class ResNetKeypoints(nn.Module):
    def __init__(self, width, num_keypoints, feature_dim, input_size):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), group_norm(width), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        blocks, c_in = [], width
        for stage, mult in enumerate([1, 2, 4, 8]):
            c_out = width * mult
            blocks += [BasicBlock(c_in, c_out, 1 if stage == 0 else 2), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        with torch.no_grad():
            side = self.blocks(self.stem(torch.zeros(1, 3, input_size, input_size))).shape[-1]
        self.kp = nn.Conv2d(8 * width, num_keypoints, 1)
        self.proj = nn.Linear(2 * num_keypoints, feature_dim)
        lin = torch.linspace(-1, 1, side)
        self.register_buffer("grid_x", lin.repeat(side))
        self.register_buffer("grid_y", lin.repeat_interleave(side))
        self.num_keypoints = num_keypoints

    def forward(self, x, proprio):
        att = self.kp(self.blocks(self.stem(x))).flatten(2).softmax(-1)
        kp = torch.stack([(att * self.grid_x).sum(-1), (att * self.grid_y).sum(-1)], -1)
        return self.proj(kp.flatten(1))


class VitSpatial(nn.Module):
    def __init__(self, embed, heads, mlp, feature_dim, input_size, proprio_dim):
        super().__init__()
        side = ((input_size - 8) // 4 + 1 - 3) // 2 + 1
        tokens = side * side
        self.c1 = nn.Conv2d(3, embed, 8, 4)
        self.c2 = nn.Conv2d(embed, embed, 3, 2)
        self.pos = nn.Parameter(torch.randn(1, tokens, embed) * 0.02)
        self.ln1, self.ln2, self.lnf = nn.LayerNorm(embed), nn.LayerNorm(embed), nn.LayerNorm(embed)
        self.qkv, self.out = nn.Linear(embed, 3 * embed), nn.Linear(embed, embed)
        self.mlp = nn.Sequential(nn.Linear(embed, mlp), nn.GELU(), nn.Linear(mlp, embed))
        self.compress = nn.Linear(tokens + proprio_dim, feature_dim)
        self.norm = nn.LayerNorm(feature_dim)
        self.weight = nn.Parameter(torch.randn(embed, feature_dim) / math.sqrt(embed))
        self.heads = heads

    def forward(self, x, proprio):
        t = self.c2(F.relu(self.c1(x))).flatten(2).transpose(1, 2) + self.pos
        n, T, e = t.shape
        qkv = self.qkv(self.ln1(t)).view(n, T, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = ((q @ k.transpose(-2, -1)) / math.sqrt(e // self.heads)).softmax(-1) @ v
        t = t + self.out(att.transpose(1, 2).reshape(n, T, e))
        t = self.lnf(t + self.mlp(self.ln2(t)))
        ch = torch.cat([t.transpose(1, 2), proprio.unsqueeze(1).expand(n, e, proprio.shape[1])], -1)
        return (F.relu(self.norm(self.compress(ch))) * self.weight).sum(1)


def sinusoidal(t, dim):
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -(math.log(10000.0) / max(1, half - 1)))
    ang = t * freqs[None]
    return torch.cat([ang.sin(), ang.cos()], -1)


class FlowPolicy(nn.Module):
    def __init__(self, cfg, cameras, image_size, proprio_dim, action_dim):
        super().__init__()
        enc, head = cfg["encoder"], cfg["velocity_head"]
        aug = enc["augmentation"]
        self.aug = aug
        input_size = aug["crop_size"] if aug["kind"] == "random_crop" else image_size
        bb = enc["backbone"]

        def make():
            if bb["kind"] == "resnet18":
                return ResNetKeypoints(bb["width"], bb["num_keypoints"], bb["feature_dim"], input_size)
            return VitSpatial(bb["embed_dim"], bb["num_heads"], bb["mlp_dim"], bb["feature_dim"], input_size, proprio_dim)

        n_enc = 1 if enc["share_across_cameras"] else cameras
        self.encoders = nn.ModuleList([make() for _ in range(n_enc)])
        self.to_, self.tp, self.k = cfg["obs_horizon"], cfg["pred_horizon"], cfg["num_denoising_steps"]
        self.d_act = self.tp * action_dim
        cond = self.to_ * (cameras * bb["feature_dim"] + proprio_dim)
        d, h = head["time_embed_dim"], head["hidden_dim"]
        self.d = d
        self.time = nn.Sequential(nn.Linear(d, 2 * d), nn.Mish(), nn.Linear(2 * d, d))
        self.inp = nn.Linear(self.d_act + d + cond, h)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Mish(), nn.Linear(h, h), nn.Mish(), nn.Linear(h, h)) for _ in range(head["num_residual_blocks"])])
        self.out = nn.Linear(h, self.d_act)

    def augment(self, x):
        n, _, h, w = x.shape
        if self.aug["kind"] == "random_shift":
            p = self.aug["pad"]
            x = F.pad(x, (p, p, p, p), mode="replicate")
            tops = torch.randint(0, 2 * p + 1, (n,)).tolist()
            lefts = torch.randint(0, 2 * p + 1, (n,)).tolist()
            return torch.stack([x[i, :, a:a + h, b:b + w] for i, (a, b) in enumerate(zip(tops, lefts))])
        if self.aug["kind"] == "random_crop":
            c = self.aug["crop_size"]
            tops = torch.randint(0, h - c + 1, (n,)).tolist()
            lefts = torch.randint(0, w - c + 1, (n,)).tolist()
            return torch.stack([x[i, :, a:a + c, b:b + c] for i, (a, b) in enumerate(zip(tops, lefts))])
        return x

    def flow_loss(self, images, proprio, actions):
        b = proprio.shape[0]
        pf = proprio.reshape(b * self.to_, -1)
        parts = []
        for cam, img in enumerate(images):
            x = img.reshape(b * self.to_, *img.shape[2:]).permute(0, 3, 1, 2).float() / 255.0 - 0.5
            enc = self.encoders[min(cam, len(self.encoders) - 1)]
            parts.append(enc(self.augment(x), pf).reshape(b, -1))
        parts.append(proprio.reshape(b, -1))
        cond = torch.cat(parts, -1)
        x1 = actions.reshape(b, -1)
        x0 = torch.randn_like(x1)
        t = torch.rand(b, 1, device=x1.device)
        xt = (1 - t) * x0 + t * x1
        y = self.inp(torch.cat([xt, self.time(sinusoidal(t, self.d)), cond], -1))
        for blk in self.blocks:
            y = y + blk(y)
        return ((self.out(y) - (x1 - x0)) ** 2).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config-json", required=True)
    ap.add_argument("--image-size", type=int, required=True)
    ap.add_argument("--proprio-dim", type=int, required=True)
    ap.add_argument("--action-dim", type=int, required=True)
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--warmup-steps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    cfg = json.loads(a.config_json)
    dev = torch.device(a.device)
    cams = len(cfg["dataset"]["obs"]["image_keys"])
    tr = cfg["train"]
    torch.manual_seed(0)
    pol = FlowPolicy(cfg["policy"], cams, a.image_size, a.proprio_dim, a.action_dim).to(dev)
    ema = FlowPolicy(cfg["policy"], cams, a.image_size, a.proprio_dim, a.action_dim).to(dev)
    ema.load_state_dict(pol.state_dict())
    opt = torch.optim.AdamW(pol.parameters(), lr=tr["lr"], betas=tuple(tr["betas"]), eps=tr["eps"], weight_decay=tr["weight_decay"])
    b, to, s = a.batch_size, cfg["policy"]["obs_horizon"], a.image_size
    images = [torch.randint(0, 256, (b, to, s, s, 3), dtype=torch.uint8, device=dev) for _ in range(cams)]
    proprio = torch.rand(b, to, a.proprio_dim, device=dev) * 2 - 1
    actions = torch.rand(b, cfg["policy"]["pred_horizon"], a.action_dim, device=dev) * 2 - 1
    pairs = list(zip(ema.parameters(), pol.parameters()))

    def step():
        opt.zero_grad(set_to_none=False)
        loss = pol.flow_loss(images, proprio, actions)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, p in pairs:
                pe.lerp_(p, 1 - tr["ema_decay"])
        return loss.item()

    for _ in range(a.warmup_steps):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    sec = time.perf_counter() - t0
    print(json.dumps({
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_step_ms": 1e3 * sec / a.steps,
        "train_samples_per_s": a.steps * b / sec,
        "parameters": sum(p.numel() for p in pol.parameters()),
    }))


if __name__ == "__main__":
    main()
