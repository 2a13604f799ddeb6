"""PyTorch-eager baseline for `rldt-vision bench finetune`: what the RLDT paper's code does per
critic batch, critic step and actor step (docs/algorithm.md §3-§5), with the same networks
(built by bench_pretrain_torch.py's classes from the same config) on random data of the same
shapes, fp32:
- critic batch draw: ONE random-shift augmentation of the batch's N*(T+1) frames (kept u8)
  and 2 bootstrap actions per next state (plain ODE through the actor), part by part;
- critic step: per part, target features of the next states and Q-bar on the cached actions
  (no gradient); TD(lambda); the gradient pass in `--mini-batch-split` parts, each part's mean
  loss divided by the split; AdamW; EMA of the target;
- actor step: particles, a-dagger, grad Q, SVGD field for every unmasked state (no gradient),
  then the losses' gradient pass in parts; Adam.
Prints one JSON object: mean seconds per draw / step and the process's peak RSS.
Written for this project.
"""
import argparse
import copy
import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_pretrain_torch import FlowPolicy, ResNetKeypoints, VitSpatial, sinusoidal  # noqa: E402


def velocity(pol, x, t, cond):
    y = pol.inp(torch.cat([x, pol.time(sinusoidal(t, pol.d)), cond], -1))
    for blk in pol.blocks:
        y = y + blk(y)
    return pol.out(y)


def condition(pol, images, proprio, train):
    b = proprio.shape[0]
    parts = []
    for cam, img in enumerate(images):
        x = img.permute(0, 3, 1, 2).float() / 255.0 - 0.5
        enc = pol.encoders[min(cam, len(pol.encoders) - 1)]
        parts.append(enc(pol.augment(x) if train else x, proprio))
    parts.append(proprio)
    return torch.cat(parts, -1)


def chain(pol, cond, x0, k):
    xs = [x0]
    for i in range(k):
        t = torch.full((x0.shape[0], 1), i / k, device=x0.device)
        xs.append(xs[-1] + velocity(pol, xs[-1], t, cond) / k)
    return torch.stack(xs)


class Critic(nn.Module):
    def __init__(self, pol, state_dim, exec_dim):
        super().__init__()
        self.encoders = copy.deepcopy(pol.encoders)
        self.pol = pol  # for augment settings only

        def head():
            last = nn.Linear(256, 1)
            nn.init.normal_(last.weight, 0.0, 0.1)
            nn.init.zeros_(last.bias)
            return nn.Sequential(nn.Linear(state_dim + exec_dim, 256), nn.SiLU(), nn.Linear(256, 256), nn.SiLU(), nn.Linear(256, 256), nn.SiLU(), last)

        self.heads = nn.ModuleList([head(), head()])

    def features(self, images, proprio, train):
        parts = []
        for cam, img in enumerate(images):
            x = img.permute(0, 3, 1, 2).float() / 255.0 - 0.5
            enc = self.encoders[min(cam, len(self.encoders) - 1)]
            parts.append(enc(self.pol.augment(x) if train else x, proprio))
        parts.append(proprio)
        return torch.cat(parts, -1)

    def q(self, feat, a):
        x = torch.cat([feat, a], -1)
        return torch.cat([h(x) for h in self.heads], -1)


def main():
    ap = argparse.ArgumentParser()
    for name in ["image-size", "proprio-dim", "action-dim", "critic-trajectories", "actor-trajectories", "chunks", "particles", "steps", "threads", "mini-batch-split"]:
        ap.add_argument("--" + name, type=int, required=True)
    ap.add_argument("--config-json", required=True)
    ap.add_argument("--device", default="cpu")
    # Trajectories succeed at chunk T - 1 - floor(f*T) and are masked after it: the actor step
    # takes the unmasked states (as RLDT's does); the critic passes every state (the paper's code).
    ap.add_argument("--masked-fraction", type=float, default=0.0)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    cfg = json.loads(a.config_json)
    dev = torch.device(a.device)
    torch.manual_seed(0)
    cams = len(cfg["dataset"]["obs"]["image_keys"])
    pc = cfg["policy"]
    K, Ta, Tp, A, P = pc["num_denoising_steps"], pc["exec_horizon"], pc["pred_horizon"], a.action_dim, a.particles
    actor = FlowPolicy(pc, cams, a.image_size, a.proprio_dim, A).to(dev)
    reference = copy.deepcopy(actor)
    feat_dim = pc["encoder"]["backbone"]["feature_dim"]
    critic = Critic(actor, cams * feat_dim + a.proprio_dim, Ta * A).to(dev)
    target = copy.deepcopy(critic)
    enc_params = [p for n, p in critic.named_parameters() if n.startswith("encoders.")]
    head_params = [p for n, p in critic.named_parameters() if n.startswith("heads.")]
    critic_opt = torch.optim.AdamW([{"params": head_params, "lr": 1e-3}, {"params": enc_params, "lr": 4e-5}], weight_decay=0.0)
    actor_opt = torch.optim.AdamW(actor.parameters(), lr=2e-5, weight_decay=0.0)
    N, T, M, S = a.critic_trajectories, a.chunks, a.actor_trajectories, a.image_size
    images = [torch.randint(0, 256, (N, T + 1, S, S, 3), dtype=torch.uint8, device=dev) for _ in range(cams)]
    proprio = torch.rand(N, T + 1, a.proprio_dim, device=dev) * 2 - 1
    actions = torch.rand(N, T, Ta * A, device=dev) * 2 - 1
    rewards = torch.zeros(N, T, device=dev)
    rewards[:, -1] = 1
    dones, mask = rewards.clone(), torch.ones(N, T, device=dev)

    split = max(1, a.mini_batch_split)

    def parts(n):
        k = min(split, n)
        return [(p * n // k, (p + 1) * n // k) for p in range(k)]

    def shift_u8(img, pad=4):
        # img [B, S, S, 3] u8 -> one random shift per image, replicate padding, u8.
        b = img.shape[0]
        off = torch.randint(0, 2 * pad + 1, (2, b, 1), device=dev) - pad
        ar = torch.arange(S, device=dev).view(1, S)
        rows = (ar + off[0]).clamp(0, S - 1).view(b, S, 1, 1).expand(b, S, S, 3)
        cols = (ar + off[1]).clamp(0, S - 1).view(b, 1, S, 1).expand(b, S, S, 3)
        return img.gather(1, rows).gather(2, cols)

    def states(imgs, pro, lo, hi, t_from, t_to):
        return [im[lo:hi, t_from:t_to].reshape(-1, S, S, 3) for im in imgs], pro[lo:hi, t_from:t_to].reshape(-1, a.proprio_dim)

    batch = {}

    def draw_batch():
        imgs = [shift_u8(im.reshape(-1, S, S, 3)).view(N, T + 1, S, S, 3) for im in images]
        boot = []
        with torch.no_grad():
            for lo, hi in parts(N):
                im, pro = states(imgs, proprio, lo, hi, 1, T + 1)
                cond = condition(actor, im, pro, False)
                rows = cond.shape[0]
                boot.append(chain(actor, cond.repeat(2, 1), torch.randn(2 * rows, Tp * A, device=dev), K)[K][:, : Ta * A].view(2, rows, -1))
        batch["images"], batch["bootstrap"] = imgs, torch.cat(boot, 1)

    def critic_step():
        imgs, boot = batch["images"], batch["bootstrap"]
        with torch.no_grad():
            qs = []
            for lo, hi in parts(N):
                im, pro = states(imgs, proprio, lo, hi, 1, T + 1)
                feat = target.features(im, pro, False)
                rows = feat.shape[0]
                a_next = boot[:, lo * T : lo * T + rows].reshape(2 * rows, -1)
                qs.append(target.q(feat.repeat(2, 1), a_next).min(-1).values.view(2, rows).mean(0).clamp(0, 1).view(hi - lo, T))
            q = torch.cat(qs, 0)
            g = rewards[:, -1] + 0.999 * (1 - dones[:, -1]) * q[:, -1]
            targets = [g]
            for t in range(T - 2, -1, -1):
                g = rewards[:, t] + 0.999 * (1 - dones[:, t]) * (0.5 * q[:, t] + 0.5 * g)
                targets.append(g)
            targets = torch.stack(targets[::-1], 1)
        critic_opt.zero_grad()
        total = 0.0
        for lo, hi in parts(N):
            im, pro = states(imgs, proprio, lo, hi, 0, T)
            qs = critic.q(critic.features(im, pro, False), actions[lo:hi].reshape((hi - lo) * T, -1)).view(hi - lo, T, 2)
            tg, mk = targets[lo:hi], mask[lo:hi]
            h0 = lo % 2  # the head of the part's first trajectory (trajectory n trains head n mod 2)
            loss = sum((((qs[(h - h0) % 2 :: 2, :, h] - tg[(h - h0) % 2 :: 2]) ** 2) * mk[(h - h0) % 2 :: 2]).mean() for h in range(2)) / split
            loss.backward()
            total += loss.item()
        critic_opt.step()
        with torch.no_grad():
            for pt, pc_ in zip(target.parameters(), critic.parameters()):
                pt.lerp_(pc_, 0.005)
        return total

    success = T - 1 - min(int(max(0.0, min(1.0, a.masked_fraction)) * T), T - 1)

    def actor_step():
        imgs, pro = states(images, proprio, 0, M, 0, success + 1)
        B = pro.shape[0]
        with torch.no_grad():
            cond = condition(actor, imgs, pro, False).repeat_interleave(P, 0)
            rows = cond.shape[0]
            ch = chain(actor, cond, torch.randn(rows, Tp * A, device=dev), K)
            end = ch[K]
            k = torch.randint(0, K, (rows,), device=dev)
            xt = ch[k, torch.arange(rows, device=dev)]
            t = (k.float() / K).view(rows, 1)
            q_dag = xt + (1 - t) * velocity(actor, xt, t, cond)
            feat = critic.features(imgs, pro, False).repeat_interleave(P, 0)
        ex = end[:, : Ta * A].detach().requires_grad_(True)
        qv = critic.q(feat, ex).mean(-1).sum()
        grad = torch.autograd.grad(qv, ex)[0]
        g = torch.cat([grad, torch.zeros(rows, (Tp - Ta) * A, device=dev)], 1) if Tp > Ta else grad
        D = g.shape[1]
        with torch.no_grad():
            qd, en, gs = q_dag.view(B, P, D), end.view(B, P, D), g.view(B, P, D)
            diff = qd.unsqueeze(2) - en.unsqueeze(1)
            d2 = (diff ** 2).sum(-1)
            h = (d2.sort(-1).values[..., (P - 1) // 2] / (2 * math.log(P + 1))).clamp_min(1e-8)
            kern = torch.exp(-d2 / (2 * h.unsqueeze(-1)))
            alpha = 0.001 * gs.norm(dim=-1).mean(-1).clamp(0, 1e5)
            phi = (kern @ gs) / P + ((kern.unsqueeze(-1) * diff).sum(2) / h.unsqueeze(-1)) * alpha.view(-1, 1, 1) / P
            phi = phi.view(rows, D)
            tau = torch.randint(0, K, (rows, 1), device=dev).float() / K
            xtau = (1 - tau) * torch.randn_like(end) + tau * end
            rc = condition(reference, imgs, pro, False).repeat_interleave(P, 0)
            vref = velocity(reference, xtau, tau, rc)
        actor_opt.zero_grad()
        total = 0.0
        for lo, hi in parts(B):
            r = slice(lo * P, hi * P)
            c = condition(actor, [im[lo:hi] for im in imgs], pro[lo:hi], False).repeat_interleave(P, 0)
            v = velocity(actor, xt[r], t[r], c)
            l_rl = -((v * phi[r]) / (K * (1 - t[r]))).sum(-1).mean()
            l_cons = (((xt[r] + (1 - t[r]) * v - end[r]) ** 2) / (K * (1 - t[r])) ** 2).sum(-1).mean()
            l_ref = ((velocity(actor, xtau[r], tau[r], c) - vref[r]) ** 2).sum(-1).mean()
            loss = (l_rl + 0.5 * l_cons + 0.2 * l_ref) * ((hi - lo) / B)
            loss.backward()
            total += loss.item()
        actor_opt.step()
        return total

    def timed(f):
        f()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            f()
        return (time.perf_counter() - t0) / a.steps

    draw_s = timed(draw_batch)
    critic_s = timed(critic_step)
    actor_s = timed(actor_step)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"torch_version": torch.__version__, "threads": torch.get_num_threads(), "mini_batch_split": split,
                      "critic_batch_draw_s": draw_s, "critic_step_s": critic_s, "actor_step_s": actor_s, "peak_rss_mb": peak_mb}))


if __name__ == "__main__":
    main()
