// training-mode: the forward rewrites a train step needs before autodiff.
//
// - BatchNormalization switches to training_mode = 1: it normalizes with the batch statistics
//   (mean and biased variance over N and the spatial axes) and also outputs the updated running
//   statistics with the ONNX momentum, running = input·momentum + batch·(1 − momentum). The
//   caller writes those back after each step.
// - Dropout is either removed ('off', the identity) or made deterministic ('mask'): it becomes
//   x · mask / (1 − ratio) with the keep mask (0/1 floats) a new graph input, so the trainer feeds
//   a seeded mask and the backward pass is the same product (no random op in the graph).

import { ErrorCodes, userError } from '../compiler/diagnostics.js';
import { tensorType, Value, type Model, type Node } from '../compiler/ir.js';
import { OpBuilder } from '../compiler/op-builder.js';

export interface TrainingModeResult {
  /** BatchNormalization running statistics: the input initializer/value and the new
   *  updated-statistic output value the node now produces (training_mode=1, ONNX momentum). */
  runningStats: { input: Value; updated: Value }[];
  /** Dropout nodes given a mask: the new float/bool mask graph input per Dropout, or removed. */
  dropoutMasks: Value[];
}

function refuse(node: Node, why: string, hint: string): Error {
  return userError(ErrorCodes.UNSUPPORTED, `cannot put ${node.label()} in training mode: ${why}`, {
    expected: 'a node the training-mode rewrite understands', found: node.op, hint,
  });
}

function batchNormToTraining(node: Node, result: TrainingModeResult, model: Model): void {
  const graph = model.graph;
  node.setInt('training_mode', 1);
  const y = node.outputs[0]!;
  const stats = [node.inputs[3]!, node.inputs[4]!];
  stats.forEach((input, k) => {
    const role = k === 0 ? 'running_mean' : 'running_var';
    const updated = node.outputs[k + 1] ?? node.addOutput(graph.uniqueName(`${y.name}.${role}`), input.type);
    result.runningStats.push({ input, updated });
  });
}

function dropoutToTraining(node: Node, mode: 'off' | 'mask', result: TrainingModeResult, model: Model, b: OpBuilder): void {
  const graph = model.graph;
  const [x, ratioInput] = node.inputs;
  const y = node.outputs[0]!;
  if (node.outputs[1] && (node.outputs[1].uses.length > 0 || graph.outputs.includes(node.outputs[1]))) {
    throw refuse(node, 'its mask output is used', 'drop the use of the Dropout mask output');
  }
  let replacement: Value = x!;
  if (mode === 'mask') {
    if (ratioInput && !ratioInput.const) throw refuse(node, 'its ratio is computed at run time', 'make the ratio a constant');
    const ratio = ratioInput ? ratioInput.const!.numbers()[0]! : node.attrFloat('ratio', 0.5);
    const mask = new Value(graph.uniqueName(`${y.name}.keep_mask`), tensorType(x!.elemType!, x!.shape ? [...x!.shape] : null));
    graph.inputs.push(mask);
    result.dropoutMasks.push(mask);
    b.namePrefix = `${node.name || y.name}.train`;
    const scale = b.floatConst([1 / (1 - ratio)], [], `${b.namePrefix}/scale`);
    const kept = b.mul(x!, mask, { before: node });
    kept.type = y.type;
    replacement = b.mul(kept, scale, { before: node });
    replacement.type = y.type;
  }
  graph.replaceAllUses(y, replacement, { outputs: true });
  graph.removeNode(node);
}

export function toTrainingMode(model: Model, opts: { dropout: 'off' | 'mask' }): TrainingModeResult {
  const opset = model.opset('');
  if (opset < 14) {
    throw userError(ErrorCodes.UNSUPPORTED, `training mode needs default-domain opset 14 or newer; the model imports opset ${opset}`, {
      expected: 'opset >= 14', found: `opset ${opset}`, hint: 'upgrade the model first (passes/upgrade-opset.ts upgradeOpset(model, 18))',
    });
  }
  const result: TrainingModeResult = { runningStats: [], dropoutMasks: [] };
  const b = new OpBuilder(model.graph, opset);
  for (const node of [...model.graph.nodes]) {
    if (node.domain !== '' && node.domain !== 'ai.onnx') continue;
    if (node.op === 'BatchNormalization') batchNormToTraining(node, result, model);
    else if (node.op === 'Dropout') dropoutToTraining(node, opts.dropout, result, model, b);
  }
  return result;
}
