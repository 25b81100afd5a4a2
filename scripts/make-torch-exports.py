#!/usr/bin/env python3
"""Real PyTorch exports for slicec's coverage tests and bench (test data only; users never need
Python). Builds torchvision models with random weights (seeded), exports each with torch.onnx at
a dynamic batch and the given opsets, into a cache folder (default test/.cache/torch-exports).

  /usr/bin/python3 scripts/make-torch-exports.py [--out DIR] [--size 64] [--only a,b] [--opsets 9,13]
      [--static-batch] [--force]

Each model is written as <name>-op<opset>.onnx, at the opsets OPSETS gives; existing files are
kept unless --force. index.json lists what was written (name, family, opset, input size). The
set covers the families users deploy: ResNet, MobileNet v2/v3, EfficientNet, DenseNet,
SqueezeNet, ShuffleNet, MnasNet, RegNet, GoogLeNet, VGG, ConvNeXt, ViT, an MLP and a
transformer encoder, plus VARIANTS (a fixed batch, no constant folding).
"""
import argparse
import json
import os
import sys
import warnings

import torch
import torch.nn as nn
import torchvision.models as tvm

warnings.filterwarnings("ignore")


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 256), nn.ReLU(), nn.Linear(256, 128), nn.GELU(),
                                 nn.LayerNorm(128), nn.Linear(128, 10))

    def forward(self, x):
        return self.net(x)


class Encoder(nn.Module):
    """Token classifier: embedding projection, two post-norm encoder layers, mean-pool head."""

    def __init__(self, dim=64, heads=4, ffn=128, depth=2):
        super().__init__()
        self.proj = nn.Linear(32, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, ffn, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        return self.head(self.encoder(self.proj(x)).mean(dim=1))


def vgg11():
    # VGG-11 features as torchvision builds them; the classifier is narrowed (4096 -> 256) and
    # reads the 2x2 map a 64x64 image leaves, since adaptive pooling to 7x7 does not export there
    model = tvm.vgg11(num_classes=10)
    model.avgpool = nn.Identity()
    model.classifier = nn.Sequential(nn.Linear(512 * 2 * 2, 256), nn.ReLU(True), nn.Dropout(), nn.Linear(256, 256),
                                     nn.ReLU(True), nn.Dropout(), nn.Linear(256, 10))
    return model


def convnext_small_width():
    # ConvNeXt-T's block structure at a quarter of its width and depth (24/48/96/192, 1-1-3-1)
    cnf = tvm.convnext.CNBlockConfig
    setting = [cnf(24, 48, 1), cnf(48, 96, 1), cnf(96, 192, 3), cnf(192, None, 1)]
    return tvm.convnext.ConvNeXt(setting, stochastic_depth_prob=0.0, num_classes=10)


def densenet_small():
    # DenseNet-121's dense blocks and transitions with fewer, narrower layers
    return tvm.densenet.DenseNet(growth_rate=16, block_config=(3, 4, 6, 3), num_init_features=32, num_classes=10)


def vit_tiny():
    # a small ViT-B/16-shaped model: 4 layers, 4 heads of 16, patch 16
    return tvm.VisionTransformer(image_size=64, patch_size=16, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128,
                                 num_classes=10)


# name -> (family, builder, input shape without batch)
MODELS = {
    "resnet18": ("ResNet", lambda: tvm.resnet18(num_classes=10), None),
    "mobilenet_v2": ("MobileNet v2", lambda: tvm.mobilenet_v2(num_classes=10), None),
    "mobilenet_v3_small": ("MobileNet v3", lambda: tvm.mobilenet_v3_small(num_classes=10), None),
    "efficientnet_b0": ("EfficientNet", lambda: tvm.efficientnet_b0(num_classes=10), None),
    "densenet": ("DenseNet", densenet_small, None),
    "squeezenet1_1": ("SqueezeNet", lambda: tvm.squeezenet1_1(num_classes=10), None),
    "shufflenet_v2_x0_5": ("ShuffleNet", lambda: tvm.shufflenet_v2_x0_5(num_classes=10), None),
    "mnasnet0_5": ("MnasNet", lambda: tvm.mnasnet0_5(num_classes=10), None),
    "regnet_y_400mf": ("RegNet", lambda: tvm.regnet_y_400mf(num_classes=10), None),
    "googlenet": ("GoogLeNet", lambda: tvm.googlenet(num_classes=10, aux_logits=False, init_weights=True), None),
    "vgg11": ("VGG", vgg11, None),
    "convnext": ("ConvNeXt", convnext_small_width, None),
    "vit": ("ViT", vit_tiny, None),
    "mlp": ("MLP", Mlp, (3, 16, 16)),
    "encoder": ("Transformer encoder", Encoder, (12, 32)),
}


# the set spreads over opsets 9..17 so each exporter path is exercised somewhere: Slice and Split
# attributes (9), LayerNormalization as one op (17), Split sizes as an input (13+)
OPSETS = {
    "resnet18": [11], "mobilenet_v2": [13], "mobilenet_v3_small": [14, 9], "efficientnet_b0": [17], "densenet": [12],
    "squeezenet1_1": [13], "shufflenet_v2_x0_5": [15], "mnasnet0_5": [16], "regnet_y_400mf": [11], "googlenet": [13],
    "vgg11": [17], "convnext": [14, 17], "vit": [14, 9], "mlp": [13], "encoder": [17, 9],
    "vit_b1": [13], "encoder_b1": [14], "encoder_raw": [13],
}


# variants of a model: <name>_b1 exported with the batch fixed to 1 (no dynamic axes), as many
# users export; <name>_raw without constant folding (weights reach MatMuls through Transpose)
VARIANTS = {"vit_b1": ("vit", True, True), "encoder_b1": ("encoder", True, True), "encoder_raw": ("encoder", False, False)}


def export(name, opset, size, out, static_batch=False):
    base, fixed, folding = VARIANTS.get(name, (name, False, True))
    static_batch = static_batch or fixed
    family, build, shape = MODELS[base]
    torch.manual_seed(1234)
    model = build().eval()
    # random, non-trivial BN statistics so folded exports are not identity-scaled
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    if base == "vit":
        shape = (3, 64, 64)
    elif shape is None:
        shape = (3, size, size)
    x = torch.randn(1, *shape)
    dynamic = None if static_batch else {"input": {0: "batch"}, "logits": {0: "batch"}}
    torch.onnx.export(model, x, out, opset_version=opset, input_names=["input"], output_names=["logits"],
                      dynamic_axes=dynamic, do_constant_folding=folding)
    return {"name": name, "family": family, "opset": opset, "input": list(shape), "file": os.path.basename(out)}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.path.join(here, "..", "test", ".cache", "torch-exports"))
    parser.add_argument("--size", type=int, default=64, help="image side for the CNNs")
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--opsets", default="", help="comma-separated opsets (default: OPSETS)")
    parser.add_argument("--static-batch", action="store_true", help="export with batch 1 fixed (no dynamic axes)")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    names = [n for n in args.only.split(",") if n] or list(OPSETS)
    index_file = os.path.join(args.out, "index.json")
    index = json.load(open(index_file)) if os.path.exists(index_file) else []
    index = [e for e in index if os.path.exists(os.path.join(args.out, e["file"]))]
    for name in names:
        if name not in OPSETS:
            sys.exit(f"unknown model {name}; known: {', '.join(OPSETS)}")
        opsets = [int(o) for o in args.opsets.split(",") if o] or OPSETS[name]
        for opset in opsets:
            out = os.path.join(args.out, f"{name}-op{opset}.onnx")
            if os.path.exists(out) and not args.force and any(e["file"] == os.path.basename(out) for e in index):
                continue
            entry = export(name, opset, args.size, out, args.static_batch)
            index = [e for e in index if e["file"] != entry["file"]] + [entry]
            print(f"wrote {out}", flush=True)
    with open(index_file, "w") as f:
        json.dump(sorted(index, key=lambda e: e["file"]), f, indent=1)


if __name__ == "__main__":
    main()
