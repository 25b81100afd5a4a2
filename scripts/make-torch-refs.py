#!/usr/bin/python3
"""Reference data from Debian's PyTorch (python3-torch 1.13) for slicec's gradient and training
tests: an independent oracle, never in a user's path.

For each model it writes test/data/torch-refs/<name>.onnx (torch.onnx.export, dynamic batch axis,
no constant folding, initializers named like the state_dict) and <name>.npz holding a fixed batch,
the train-mode logits and mean cross-entropy loss, and every trainable parameter's gradient (plus
the BatchNorm running statistics after that one train-mode step). Two more entries hold an epoch
of plain SGD and of Nesterov SGD with weight decay on 8 fixed batches, with the weights after it.

Conventions (see test/data/torch-refs/README.md): loss = mean cross-entropy over the batch;
BatchNorm in train mode normalizes with the batch mean and BIASED batch variance, then updates
running_mean = 0.9·running_mean + 0.1·mean and running_var = 0.9·running_var + 0.1·var·n/(n−1)
(UNBIASED variance, n = N·H·W); SGD (PyTorch): v' = μ·v + (g + wd·w), w' = w − lr·v', Nesterov
w' = w − lr·(g + wd·w + μ·v').

Needs python3-torch and python3-onnx. Run with /usr/bin/python3 scripts/make-torch-refs.py
[OUT_DIR]; the output is deterministic for a given torch build (fixed seeds, one thread).
"""

import copy
import io
import os
import sys

import numpy as np
import onnx
import onnx.numpy_helper
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)
OUT_DIR = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'data', 'torch-refs')


# ---------------------------------------------------------------- models

class CnnBn(nn.Module):
    """The Fashion-MNIST CNN, narrow: Conv 1→8 + BN + ReLU + MaxPool2, Conv 8→16 + BN + ReLU +
    MaxPool2, Flatten, Gemm 784→32, ReLU, Gemm 32→10; input [N, 1, 28, 28]."""

    def __init__(self, c1=8, c2=16, hidden=32):
        super().__init__()
        self.c1 = nn.Conv2d(1, c1, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c1)
        self.c2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c2)
        self.fc1 = nn.Linear(c2 * 7 * 7, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.c1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.c2(x))), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class ResnetBlock(nn.Module):
    """Stem conv-bn-relu, then a basic block with a stride-2 first conv and a strided 1×1
    conv + BN shortcut, add, relu, global average pool, linear; input [N, 3, 16, 16]."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.down = nn.Conv2d(8, 16, 1, stride=2, bias=False)
        self.down_bn = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        y = F.relu(y + self.down_bn(self.down(x)))
        return self.fc(torch.flatten(self.pool(y), 1))


class DwSe(nn.Module):
    """MobileNetV3-style block: pointwise 3→16 + BN + hardswish, depthwise 3×3 stride 2 + BN +
    ReLU, squeeze-excite (global pool, 1×1 16→4, ReLU, 1×1 4→16, hardsigmoid, Mul), pointwise
    16→8, global pool, linear 8→10; input [N, 3, 16, 16]."""

    def __init__(self):
        super().__init__()
        self.pw1 = nn.Conv2d(3, 16, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.se_reduce = nn.Conv2d(16, 4, 1)
        self.se_expand = nn.Conv2d(4, 16, 1)
        self.pw2 = nn.Conv2d(16, 8, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = F.hardswish(self.bn1(self.pw1(x)))
        x = F.relu(self.bn2(self.dw(x)))
        gate = F.hardsigmoid(self.se_expand(F.relu(self.se_reduce(self.pool(x)))))
        x = self.pw2(x * gate)
        return self.fc(torch.flatten(self.pool(x), 1))


class MlpLn(nn.Module):
    """Linear 48→64, LayerNorm, GELU (erf), Linear 64→10; input [N, 48]."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(48, 64)
        self.ln = nn.LayerNorm(64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc2(F.gelu(self.ln(self.fc1(x))))


class Transformer(nn.Module):
    """nn.TransformerEncoderLayer(d_model 32, 4 heads, ff 64, dropout 0, batch_first), mean over
    the 6 tokens, Linear 32→10; input [N, 6, 32]."""

    def __init__(self):
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.enc(x).mean(dim=1))


class SmallCnn(nn.Module):
    """No BatchNorm (train and eval modes agree): Conv 1→4 + ReLU + MaxPool2, Conv 4→8 + ReLU +
    MaxPool2, Flatten, Gemm 72→16, ReLU, Gemm 16→10; input [N, 1, 12, 12]."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 8, 3, padding=1)
        self.fc1 = nn.Linear(72, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


# ---------------------------------------------------------------- helpers

def perturb_norm_params(model, gen):
    """Give every norm layer non-default affine parameters and running statistics. Besides making
    the check stronger, this keeps the exporter from merging equal initializers (a fresh BN's
    running_var equals its weight, all ones) into one tensor plus Identity nodes, which would
    lose the state_dict names."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
                n = module.weight.shape
                module.weight.copy_(1 + 0.2 * torch.randn(n, generator=gen))
                module.bias.copy_(0.1 * torch.randn(n, generator=gen))
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(0.1 * torch.randn(module.num_features, generator=gen))
                module.running_var.copy_(1 + 0.5 * torch.rand(module.num_features, generator=gen))


def bn_layers(model):
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


def export(model, x, opset):
    """Export a copy in eval mode with TrainingMode.PRESERVE: BatchNormalization stays a node in
    inference form (running stats as initializers; EVAL folds it into the Conv and renames the
    weights onnx::Conv_*, TRAINING emits the 5-output training form). Exporting a copy keeps the
    tracing forward from touching the original's running statistics."""
    clone = copy.deepcopy(model).eval()
    dynamic = {'x': {0: 'N'}, 'logits': {0: 'N'}}
    buffer = io.BytesIO()
    torch.onnx.export(clone, x, buffer, opset_version=opset, input_names=['x'], output_names=['logits'],
                      dynamic_axes=dynamic, do_constant_folding=False, keep_initializers_as_inputs=False,
                      training=torch.onnx.TrainingMode.PRESERVE)
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    check_initializer_names(proto, model)
    return proto


def check_initializer_names(proto, model):
    """Every initializer is a state_dict entry by name, and every parameter is an initializer."""
    state = model.state_dict()
    names = [init.name for init in proto.graph.initializer]
    stray = [n for n in names if n not in state]
    missing = [n for n, _ in model.named_parameters() if n not in names]
    if stray or missing:
        raise SystemExit(f'initializer names differ from the state_dict: stray {stray}, missing {missing}')
    for init in proto.graph.initializer:
        stored = onnx.numpy_helper.to_array(init)
        if not np.array_equal(stored, state[init.name].numpy()):
            raise SystemExit(f'initializer {init.name} does not hold the state_dict value')


def save(name, proto, arrays):
    onnx.save(proto, os.path.join(OUT_DIR, f'{name}.onnx'))
    np.savez_compressed(os.path.join(OUT_DIR, f'{name}.npz'), **arrays)
    print(f'{name}: ' + ', '.join(f'{k} {list(v.shape)}' for k, v in arrays.items() if '/' not in k)
          + f', {sum("/" in k for k in arrays)} per-tensor arrays')


def f32(t):
    return t.detach().numpy().astype(np.float32)


def batch_of(gen, shape, classes=10):
    x = torch.randn(shape, generator=gen)
    y = torch.randint(0, classes, (shape[0],), generator=gen)
    return x, y


# ---------------------------------------------------------------- references

def check_running_stats(bname, bn, before, bn_input):
    """Confirm the convention the README states: momentum 0.1 on the new value, and the running
    variance fed with the unbiased batch variance."""
    mean = bn_input.mean(dim=(0, 2, 3))
    var = bn_input.var(dim=(0, 2, 3), unbiased=True)
    expect_mean = 0.9 * before[0] + 0.1 * mean
    expect_var = 0.9 * before[1] + 0.1 * var
    if not (torch.allclose(bn.running_mean, expect_mean, rtol=1e-5, atol=1e-6)
            and torch.allclose(bn.running_var, expect_var, rtol=1e-5, atol=1e-6)):
        raise SystemExit(f'{bname}: running statistics do not follow the documented update')


def grad_reference(name, model_class, x_shape, opset, seed):
    """One train-mode forward and backward on a fixed batch."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = model_class()
    perturb_norm_params(model, gen)
    x, y = batch_of(gen, x_shape)
    proto = export(model, x, opset)
    arrays = {'x': f32(x), 'y': y.numpy().astype(np.int64)}
    bns = bn_layers(model)
    if bns:
        with torch.no_grad():
            arrays['logits_eval'] = f32(model.eval()(x))
    model.train()
    before = {bname: (bn.running_mean.clone(), bn.running_var.clone()) for bname, bn in bns}
    bn_inputs = {}
    hooks = [bn.register_forward_hook(lambda m, inp, out, key=bname: bn_inputs.__setitem__(key, inp[0].detach()))
             for bname, bn in bns]
    logits = model(x)
    for hook in hooks:
        hook.remove()
    loss = F.cross_entropy(logits, y)
    loss.backward()
    for bname, bn in bns:
        check_running_stats(bname, bn, before[bname], bn_inputs[bname])
    arrays['logits'] = f32(logits)
    arrays['loss'] = np.float32(loss.item())
    for pname, param in model.named_parameters():
        arrays[f'grad/{pname}'] = f32(param.grad)
    for bname, bn in bns:
        arrays[f'running_mean_after/{bname}.running_mean'] = f32(bn.running_mean)
        arrays[f'running_var_after/{bname}.running_var'] = f32(bn.running_var)
    save(name, proto, arrays)


def replay_step(model, velocity, xb, yb, lr, momentum, nesterov, weight_decay):
    """The update the README documents, written out, to confirm torch.optim.SGD does exactly it:
    v' = μ·v + (g + wd·w); w' = w − lr·v' (Nesterov: w' = w − lr·(g + wd·w + μ·v'))."""
    model.zero_grad()
    F.cross_entropy(model(xb), yb).backward()
    with torch.no_grad():
        for pname, param in model.named_parameters():
            d = param.grad + weight_decay * param
            velocity[pname] = momentum * velocity[pname] + d
            param -= lr * (d + momentum * velocity[pname] if nesterov else velocity[pname])


def sgd_reference(name, seed, lr, momentum, nesterov, weight_decay, batches=8, batch=16):
    """One epoch of torch.optim.SGD over fixed batches in order. Labels come from a fixed random
    linear teacher so the loss has something to learn."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SmallCnn()
    x = torch.randn((batches * batch, 1, 12, 12), generator=gen)
    teacher = torch.randn((144, 10), generator=gen)
    y = torch.argmax(x.flatten(1) @ teacher, dim=1)
    proto = export(model, x[:batch], 13)
    replay = copy.deepcopy(model)
    velocity = {pname: torch.zeros_like(param) for pname, param in replay.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    model.train()
    losses = []
    for b in range(batches):
        xb, yb = x[b * batch:(b + 1) * batch], y[b * batch:(b + 1) * batch]
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        replay_step(replay, velocity, xb, yb, lr, momentum, nesterov, weight_decay)
    for (pname, param), replayed in zip(model.named_parameters(), replay.parameters()):
        if not torch.allclose(param, replayed, rtol=1e-5, atol=1e-7):
            raise SystemExit(f'{name}: {pname} after torch.optim.SGD differs from the documented update')
    arrays = {'x': f32(x), 'y': y.numpy().astype(np.int64), 'losses': np.array(losses, dtype=np.float32),
              'lr': np.float32(lr), 'momentum': np.float32(momentum), 'nesterov': np.bool_(nesterov),
              'weight_decay': np.float32(weight_decay), 'batch_size': np.int64(batch)}
    for pname, param in model.named_parameters():
        arrays[f'after/{pname}'] = f32(param)
    save(name, proto, arrays)


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    grad_reference('cnn_bn', CnnBn, (16, 1, 28, 28), 13, seed=1)
    grad_reference('resnet_block', ResnetBlock, (8, 3, 16, 16), 13, seed=2)
    grad_reference('dw_se', DwSe, (8, 3, 16, 16), 13, seed=3)
    grad_reference('mlp_ln', MlpLn, (16, 48), 13, seed=4)
    grad_reference('mlp_ln_op17', MlpLn, (16, 48), 17, seed=4)
    grad_reference('transformer', Transformer, (8, 6, 32), 13, seed=5)
    sgd_reference('sgd_epoch', seed=6, lr=0.05, momentum=0.0, nesterov=False, weight_decay=0.0)
    sgd_reference('sgd_epoch_momentum', seed=6, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)


if __name__ == '__main__':
    main()
