// fold-batch-norm (--norm none): fold every inference BatchNormalization that directly follows a
// Conv or Gemm (as its only consumer) into that layer's weights and bias, so the emitted graphs
// carry no normalization at all. y = γ·(W·x + b − μ)/√(σ² + ε) + β becomes W'·x + b' with
// W'[o] = W[o]·s[o], b'[o] = (b[o] − μ[o])·s[o] + β[o], s = γ/√(σ² + ε). Per output channel, so
// slicing is unaffected; the folded bias joins the layer's output union.

import type { Model, Node } from '../compiler/ir.js';
import { OpBuilder } from '../compiler/op-builder.js';
import { DataType, Tensor } from '../compiler/tensor.js';
import type { ChannelAnalysis } from './couple-channels.js';
import { emptyAdditions, type AnalysisAdditions } from './analysis-additions.js';

export interface FoldResult {
  folded: number;
  kept: string[];
  /** Folded biases and the spaces they are cut on, for compile() to merge. */
  additions: AnalysisAdditions;
}

export function foldBatchNorm(model: Model, analysis: ChannelAnalysis): FoldResult {
  const additions = emptyAdditions();
  const graph = model.graph;
  const b = new OpBuilder(graph, model.opset());
  let folded = 0;
  const kept: string[] = [];
  for (const bn of [...graph.nodes]) {
    if (bn.op !== 'BatchNormalization' || bn.domain !== '') continue;
    const layer = bn.inputs[0]?.producer;
    const reason = foldable(bn, layer);
    if (reason) {
      kept.push(`${bn.label()}: ${reason}`);
      continue;
    }
    const conv = layer!;
    const w = conv.inputs[1]!;
    const wt = w.const!;
    const out = wt.dims[conv.op === 'Gemm' && conv.attrInt('transB', 0) === 0 ? 1 : 0]!;
    const [gamma, beta, mean, variance] = [1, 2, 3, 4].map((i) => bn.inputs[i]!.const!.numbers());
    const eps = bn.attrFloat('epsilon', 1e-5);
    const scale = gamma!.map((g, o) => g / Math.sqrt(variance![o]! + eps));
    const weights = wt.data() as Float32Array;
    const transposed = conv.op === 'Gemm' && conv.attrInt('transB', 0) === 0;
    const perOut = weights.length / out;
    for (let i = 0; i < weights.length; i++) {
      const o = transposed ? i % out : Math.floor(i / perOut);
      weights[i] = weights[i]! * scale[o]!;
    }
    graph.setConstant(w, Tensor.fromTyped(DataType.FLOAT, [...wt.dims], weights));
    const oldBias = conv.inputs[2]?.const?.numbers() ?? new Array<number>(out).fill(0);
    const bias = Float32Array.from(oldBias, (x, o) => (x - mean![o]!) * scale[o]! + beta![o]!);
    const space = analysis.tracked.get(conv.outputs[0]!)?.space;
    const biasValue = conv.inputs[2] && conv.inputs[2].uses.length === 1 ? conv.inputs[2] : b.constant(Tensor.float32([out], bias), `${conv.name || 'layer'}_folded_bias`);
    if (biasValue === conv.inputs[2]) graph.setConstant(biasValue, Tensor.float32([out], bias));
    else conv.setInput(2, biasValue);
    if (space) additions.params.set(biasValue, [{ axis: 0, space }]);
    const y = bn.outputs[0]!;
    graph.replaceAllUses(y, conv.outputs[0]!, { outputs: true });
    if (graph.outputs.includes(conv.outputs[0]!)) conv.outputs[0]!.name = y.name;
    graph.removeNode(bn);
    folded++;
  }
  graph.removeUnusedInitializers();
  return { folded, kept, additions };
}

function foldable(bn: Node, layer: Node | null | undefined): string | null {
  if (!layer || (layer.op !== 'Conv' && layer.op !== 'Gemm') || layer.domain !== '') return 'does not follow a Conv or Gemm';
  if (layer.outputs[0]!.uses.length !== 1) return 'the layer output has other readers';
  if (!layer.inputs[1]?.const || layer.inputs[1].const.dtype !== DataType.FLOAT || layer.inputs[1].uses.length !== 1) return 'the layer weight is not a float constant of its own';
  if (layer.inputs[2] && !layer.inputs[2].const) return 'the layer bias is computed at run time';
  if (layer.op === 'Gemm' && (layer.attrFloat('alpha', 1) !== 1 || layer.attrFloat('beta', 1) !== 1)) return 'Gemm with alpha/beta other than 1';
  if ([1, 2, 3, 4].some((i) => !bn.inputs[i]?.const)) return 'its statistics are computed at run time';
  if (bn.outputs.slice(1).some((o) => o.name && o.uses.length > 0)) return 'it runs in training mode';
  return null;
}
