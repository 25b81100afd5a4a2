#!/usr/bin/python3
"""PyTorch's speed on the Fashion-MNIST CNN, the baseline for slicec's training throughput:
Debian's python3-torch 1.13 on the CPU, one thread, batch 64, at widths r = 1, .75, .5, .25
(Conv 1→32r + BN + ReLU + MaxPool 2, Conv 32r→64r + BN + ReLU + MaxPool 2, Flatten,
Gemm 64r·7·7→128r, ReLU, Gemm 128r→10; 3×3 convs with pad 1; input [N, 1, 28, 28]).

Prints a table: forward samples/s (eval mode, no autograd) and train-step samples/s (train mode:
forward, mean cross-entropy, backward, one torch.optim.SGD step), each from the median time of
several runs after a warm-up; the runs cycle through all cells so load changes on a shared
machine spread evenly. With --onnx-dir DIR it also writes each width as
fashion_cnn_r<rate>.onnx (eval-mode export with BatchNormalization kept, dynamic batch, weights
named like the state_dict), so the TypeScript side can time the very same networks.

Debian's torch links whichever libblas.so.3 the alternatives system selects; the reference BLAS
is ~24× slower at GEMM than OpenBLAS (apt-get install -y libopenblas0-pthread). The table's
header names the BLAS library this process loaded.

Usage: /usr/bin/python3 bench/torch-train-speed.py [--runs 7] [--iters 10] [--batch 64]
       [--momentum 0] [--onnx-dir DIR]
"""

import argparse
import io
import os
import statistics
import time

import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

RATES = [1.0, 0.75, 0.5, 0.25]


class FashionCnn(nn.Module):
    def __init__(self, rate):
        super().__init__()
        c1, c2, hidden = round(32 * rate), round(64 * rate), round(128 * rate)
        self.c1 = nn.Conv2d(1, c1, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c1)
        self.c2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c2)
        self.fc1 = nn.Linear(c2 * 7 * 7, hidden)
        self.fc2 = nn.Linear(hidden, 10)
        self.widths = (c1, c2, hidden)
        # non-default BN state, as after training; with the defaults (weight = running_var = 1,
        # bias = running_mean = 0) the exporter merges equal initializers behind Identity nodes
        with torch.no_grad():
            for bn in (self.bn1, self.bn2):
                bn.weight.uniform_(0.8, 1.2)
                bn.bias.uniform_(-0.1, 0.1)
                bn.running_mean.uniform_(-0.1, 0.1)
                bn.running_var.uniform_(0.8, 1.5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.c1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.c2(x))), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def loaded_blas():
    """The BLAS shared objects mapped into this process (after torch has run a matmul)."""
    torch.ones(64, 64) @ torch.ones(64, 64)
    with open('/proc/self/maps') as maps:
        libs = {os.path.basename(line.split()[-1]) for line in maps if 'blas' in line.lower()}
    return ', '.join(sorted(libs)) or 'none found'


def time_call(step, iters):
    """Seconds for `iters` calls of `step`."""
    start = time.perf_counter()
    for _ in range(iters):
        step()
    return time.perf_counter() - start


def cells_for(rate, args, x, y):
    """The forward and train-step closures of one width."""
    torch.manual_seed(0)
    model = FashionCnn(rate)
    if args.onnx_dir:
        export(model, x, os.path.join(args.onnx_dir, f'fashion_cnn_r{rate:g}.onnx'))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=args.momentum)

    def forward():
        model.eval()
        with torch.no_grad():
            model(x)

    def train_step():
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return model.widths, forward, train_step


def export(model, x, file):
    """Eval-mode export, BN kept as a node (TrainingMode.PRESERVE; EVAL would fold it into the
    Conv), no constant folding, so initializer names are the state_dict names."""
    buffer = io.BytesIO()
    torch.onnx.export(model.eval(), x, buffer, opset_version=13, input_names=['x'], output_names=['logits'],
                      dynamic_axes={'x': {0: 'N'}, 'logits': {0: 'N'}}, do_constant_folding=False,
                      keep_initializers_as_inputs=False, training=torch.onnx.TrainingMode.PRESERVE)
    names = {init.name for init in onnx.load_from_string(buffer.getvalue()).graph.initializer}
    expected = {name for name in model.state_dict() if not name.endswith('num_batches_tracked')}
    if names != expected:
        raise SystemExit(f'{file}: initializers {sorted(names ^ expected)} differ from the state_dict')
    with open(file, 'wb') as out:
        out.write(buffer.getvalue())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--runs', type=int, default=7, help='timed runs per cell; the median is printed')
    parser.add_argument('--iters', type=int, default=10, help='batches per timed run (and per warm-up)')
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--momentum', type=float, default=0.0, help='SGD momentum in the train step')
    parser.add_argument('--onnx-dir', help='also write fashion_cnn_r<rate>.onnx for each width here')
    args = parser.parse_args()
    if args.onnx_dir:
        os.makedirs(args.onnx_dir, exist_ok=True)

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((args.batch, 1, 28, 28), generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)

    print(f'PyTorch {torch.__version__}, {torch.get_num_threads()} thread, BLAS: {loaded_blas()}; '
          f'batch {args.batch}, median of {args.runs} runs x {args.iters} batches, SGD momentum {args.momentum:g}')
    print()
    header = ['model', 'rate', 'widths', 'batch', 'forward samples/s', 'train-step samples/s']
    cells = [cells_for(rate, args, x, y) for rate in RATES]
    for _, forward, train_step in cells:  # warm-up
        time_call(forward, args.iters)
        time_call(train_step, args.iters)
    # runs interleave all cells, so a change in the machine's load hits every cell alike
    seconds = [([], []) for _ in cells]
    for _ in range(args.runs):
        for (_, forward, train_step), (forward_s, train_s) in zip(cells, seconds):
            forward_s.append(time_call(forward, args.iters))
            train_s.append(time_call(train_step, args.iters))
    rows = []
    for rate, (widths, _, _), (forward_s, train_s) in zip(RATES, cells, seconds):
        samples = args.batch * args.iters
        rows.append(['fashion-cnn', f'{rate:g}', '/'.join(map(str, widths)), str(args.batch),
                     f'{samples / statistics.median(forward_s):,.0f}', f'{samples / statistics.median(train_s):,.0f}'])
    sizes = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    print('| ' + ' | '.join(h.ljust(s) for h, s in zip(header, sizes)) + ' |')
    print('|' + '|'.join('-' * (s + 1) + ':' if i >= 3 else '-' * (s + 2) for i, s in enumerate(sizes)) + '|')
    for row in rows:
        print('| ' + ' | '.join(v.rjust(s) if i >= 3 else v.ljust(s) for i, (v, s) in enumerate(zip(row, sizes))) + ' |')


if __name__ == '__main__':
    main()
