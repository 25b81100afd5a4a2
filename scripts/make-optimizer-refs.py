#!/usr/bin/python3
# Reference data for test/add-loss.test.ts and test/add-optimizer.test.ts, computed by PyTorch
# (Debian's python3-torch, 1.13): what passes/add-loss.ts and passes/add-optimizer.ts must match.
#
#   /usr/bin/python3 scripts/make-optimizer-refs.py   # writes test/data/optimizer-refs/*.json
#
# optimizer.json: three consecutive torch.optim.SGD / torch.optim.AdamW steps on two float32
#   parameters with seeded random gradients and a learning rate that changes every step; after
#   each step the parameters and the optimizer state (momentum_buffer, exp_avg, exp_avg_sq).
# loss.json: seeded float32 logits, labels and teacher probabilities; the loss and its gradient
#   with respect to the logits by autograd, in float64 on those float32 inputs.
#   cross-entropy: F.cross_entropy(z, y) (mean over the batch);
#   distillation: (1 - w) * F.cross_entropy(z, y) + w * T^2 * F.cross_entropy(z / T, p), the
#   second term PyTorch's soft-target cross-entropy against the teacher probabilities p;
#   mse: F.mse_loss(z, t) (mean over every element).
# Numbers are float32 values written as exact decimals (JSON doubles), so the TypeScript side
# reads back the same bits.

import json
import os

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'data', 'optimizer-refs')


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


# ---------------------------------------------------------------- optimizer

PARAMS = [('fc.weight', [4, 3]), ('fc.bias', [4])]
LRS = [0.1, 0.05, 0.02]

OPTIMIZER_CASES = [
    ('sgd', {'kind': 'sgd', 'momentum': 0.0, 'nesterov': False, 'weightDecay': 0.0}),
    ('sgd-decay', {'kind': 'sgd', 'momentum': 0.0, 'nesterov': False, 'weightDecay': 0.01}),
    ('sgd-momentum', {'kind': 'sgd', 'momentum': 0.9, 'nesterov': False, 'weightDecay': 0.01}),
    ('sgd-nesterov', {'kind': 'sgd', 'momentum': 0.9, 'nesterov': True, 'weightDecay': 0.01}),
    ('adamw', {'kind': 'adamw', 'beta1': 0.9, 'beta2': 0.999, 'eps': 1e-8, 'weightDecay': 0.01}),
    ('adamw-betas', {'kind': 'adamw', 'beta1': 0.8, 'beta2': 0.99, 'eps': 1e-6, 'weightDecay': 0.0}),
]

STATE_KEYS = {'momentum_buffer': 'momentum', 'exp_avg': 'adam-m', 'exp_avg_sq': 'adam-v'}


def make_optimizer(spec, params):
    if spec['kind'] == 'sgd':
        return torch.optim.SGD(params, lr=LRS[0], momentum=spec['momentum'], nesterov=spec['nesterov'],
                               weight_decay=spec['weightDecay'])
    return torch.optim.AdamW(params, lr=LRS[0], betas=(spec['beta1'], spec['beta2']), eps=spec['eps'],
                             weight_decay=spec['weightDecay'], foreach=False)


def optimizer_case(seed, name, spec):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(shape, generator=gen, dtype=torch.float32).requires_grad_() for _, shape in PARAMS]
    case = {
        'name': name,
        'spec': spec,
        'params': [{'name': n, 'shape': s, 'init': flat(p)} for (n, s), p in zip(PARAMS, params)],
        'steps': [],
    }
    opt = make_optimizer(spec, params)
    for lr in LRS:
        for group in opt.param_groups:
            group['lr'] = lr
        grads = [torch.randn(p.shape, generator=gen, dtype=torch.float32) for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        step = {'lr': lr, 'grads': {}, 'params': {}, 'state': {}}
        for (n, _), p, g in zip(PARAMS, params, grads):
            step['grads'][n] = flat(g)
            step['params'][n] = flat(p)
            state = {}
            for key, role in STATE_KEYS.items():
                if key in opt.state[p] and opt.state[p][key] is not None:
                    state[role] = flat(opt.state[p][key])
            step['state'][n] = state
        case['steps'].append(step)
    return case


# ---------------------------------------------------------------- loss

N, C = 6, 5

LOSS_CASES = [
    ('cross-entropy', {'kind': 'cross-entropy'}),
    ('distill', {'kind': 'cross-entropy', 'distill': {'weight': 0.3, 'temperature': 2.0}}),
    ('distill-inplace', {'kind': 'cross-entropy', 'distill': {'weight': 1.0, 'temperature': 1.0}}),
    ('mse', {'kind': 'mse'}),
]


def loss_case(seed, name, spec):
    gen = torch.Generator().manual_seed(seed)
    logits32 = (torch.randn([N, C], generator=gen) * 2).float()
    case = {'name': name, 'spec': spec, 'shape': [N, C], 'logits': flat(logits32)}
    z = logits32.double().requires_grad_()
    if spec['kind'] == 'mse':
        target32 = torch.randn([N, C], generator=gen).float()
        case['labels'] = flat(target32)
        loss = F.mse_loss(z, target32.double())
    else:
        labels = torch.randint(0, C, [N], generator=gen)
        case['labels'] = [int(x) for x in labels.tolist()]
        loss = F.cross_entropy(z, labels)
        if 'distill' in spec:
            w, temp = spec['distill']['weight'], spec['distill']['temperature']
            teacher32 = F.softmax(torch.randn([N, C], generator=gen) * 2 / temp, dim=1).float()
            case['teacher'] = flat(teacher32)
            soft = F.cross_entropy(z / temp, teacher32.double())
            loss = (1 - w) * loss + w * temp * temp * soft
    loss.backward()
    case['loss'] = float(loss)
    case['grad'] = flat(z.grad)
    return case


def write(name, data):
    path = os.path.join(OUT, name)
    with open(path, 'w') as f:
        json.dump(data, f, indent=1)
        f.write('\n')
    print(f'wrote {os.path.relpath(path)} ({os.path.getsize(path)} bytes)')


def main():
    os.makedirs(OUT, exist_ok=True)
    meta = {'torch': torch.__version__}
    write('optimizer.json', {**meta, 'cases': [optimizer_case(100 + i, n, s) for i, (n, s) in enumerate(OPTIMIZER_CASES)]})
    write('loss.json', {**meta, 'cases': [loss_case(200 + i, n, s) for i, (n, s) in enumerate(LOSS_CASES)]})


if __name__ == '__main__':
    main()
