#!/usr/bin/env python3
"""PyTorch reference for bench_trainer: the same networks, the same work.

Trains one of bench_trainer's architectures with SGD + momentum on random
1x28x28 float32 inputs in [0, 1), batch 64, and prints the training
throughput as `pytorch_samples_per_s`:

  cnn        conv(1->6,5x5) ReLU maxpool2 conv(6->16,5x5) ReLU maxpool2
             flatten dense 256->120->84->10 (ReLU between dense layers)
  mlp        flatten dense 784->200->200->10
  mlp-large  flatten dense 784->1024->1024->10 (1.86M parameters)

The defaults match bench_trainer's so that the two numbers can be compared
directly:

    python3 bench/pytorch_cnn.py [--arch cnn] [--samples 4096] [--epochs 3]
                                 [--batch 64] [--threads 2] [--device cpu]
                                 [--json]

The first epoch is a warm-up (allocator, oneDNN or cuDNN caches) and is not
timed, as in bench_trainer. With --device cuda the examples live on the GPU
before timing starts, TF32 is off (float32 throughout, as in fedc), cuDNN
may pick its fastest algorithms, and the loss is summed on the GPU and read
once per epoch, as fedc's trainer does.
"""
import argparse
import json
import sys
import time

import torch
import torch.nn as nn


def mlp(hidden):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, 10))


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(256, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=["cnn", "mlp", "mlp-large"], default="cnn")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    x = torch.rand(args.samples, 1, 28, 28, dtype=torch.float32).to(dev)
    y = torch.randint(0, 10, (args.samples,)).to(dev)
    model = {"cnn": Cnn, "mlp": lambda: mlp(200), "mlp-large": lambda: mlp(1024)}[args.arch]().to(dev)
    nparams = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0)
    loss_fn = nn.CrossEntropyLoss()

    def epoch():
        perm = torch.randperm(args.samples, device=dev)
        total = torch.zeros((), device=dev)
        for i in range(0, args.samples, args.batch):
            idx = perm[i:i + args.batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        return total.item() / args.samples

    epoch()  # warm-up, not timed
    t0 = time.perf_counter()
    loss = 0.0
    for _ in range(args.epochs):
        loss = epoch()
    dt = time.perf_counter() - t0
    sps = args.samples * args.epochs / dt

    if args.json:
        print(json.dumps({
            "benchmark": "pytorch_cnn",
            "arch": args.arch,
            "device": args.device,
            "params": nparams,
            "torch_version": torch.__version__,
            "threads": args.threads,
            "batch_size": args.batch,
            "samples": args.samples,
            "epochs": args.epochs,
            "seconds": dt,
            "last_epoch_loss": loss,
            "pytorch_samples_per_s": sps,
        }))
    else:
        print(f"torch {torch.__version__}, {args.arch} on {args.device}, {args.threads} threads, batch {args.batch}, "
              f"{args.samples} samples x {args.epochs} epochs in {dt:.3f} s, loss {loss:.4f}")
        print(f"pytorch_samples_per_s {sps:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
