// training-mode: the forward rewrites a train step needs before autodiff.
//
// - BatchNormalization switches to training_mode = 1: it normalizes with the batch statistics
//   (mean and biased variance over N and the spatial axes). Its momentum becomes 0, so its extra
//   outputs are those batch statistics themselves (the backward reads them instead of reducing
//   the activation again), and per-channel nodes after it make the updated running statistics
//   with the model's ONNX momentum, running = input·momentum + batch·(1 − momentum). The caller
//   writes those back after each step. (Its statistics inputs become zeros of their own: see
//   batchNormToTraining.)
// - Dropout is either removed ('off', the identity) or made deterministic ('mask'): it becomes
//   x · mask / (1 − ratio) with the keep mask (0/1 floats) a new graph input, so the trainer feeds
//   a seeded mask and the backward pass is the same product (no random op in the graph).

import { ErrorCodes, userError } from '../compiler/diagnostics.js';
import { tensorType, Value, type Model, type Node } from '../compiler/ir.js';
import { OpBuilder } from '../compiler/op-builder.js';

export interface TrainingModeResult {
  /** BatchNormalization running statistics: the input initializer/value, the batch statistic
   *  the node now outputs (training_mode=1, momentum 0) and the updated running statistic made
   *  from both with the model's ONNX momentum. */
  runningStats: { input: Value; batch: Value; updated: Value }[];
  /** Dropout nodes given a mask: the new float/bool mask graph input per Dropout, or removed. */
  dropoutMasks: Value[];
}

function refuse(node: Node, why: string, hint: string): Error {
  return userError(ErrorCodes.UNSUPPORTED, `cannot put ${node.label()} in training mode: ${why}`, {
    expected: 'a node the training-mode rewrite understands', found: node.op, hint,
  });
}

function batchNormToTraining(node: Node, result: TrainingModeResult, model: Model, b: OpBuilder): void {
  const graph = model.graph;
  const momentum = node.attrFloat('momentum', 0.9);
  node.setInt('training_mode', 1);
  node.setFloat('momentum', 0);
  const y = node.outputs[0]!;
  const stats = [node.inputs[3]!, node.inputs[4]!];
  const next = graph.nodes[graph.nodes.indexOf(node) + 1];
  b.namePrefix = `${node.name || y.name}.train`;
  // With momentum 0 the node reads its statistics inputs only times 0, so it gets zeros of its own.
  // onnxruntime's BatchNormalization aliases inputs 3 and 4 to outputs 1 and 2: it writes the new
  // statistics into their buffers. Fed the running statistics, it would overwrite them before the
  // updates below read them (and overwrite the caller's arrays); fed a constant, it would overwrite
  // every use of that constant once onnxruntime shares equal initializers. So each input is a
  // value computed at run time, read by nothing else: Where(IsNaN(s), 0, 0), zeros of s's shape.
  const zero = b.floatConst([0], [], `${b.namePrefix}/zero`);
  stats.forEach((input, k) => {
    node.setInput(3 + k, b.op1('Where', [b.op1('IsNaN', [input], {}, { before: node }), zero, zero], {}, { before: node, outputTypes: [input.type] }));
    const role = k === 0 ? 'running_mean' : 'running_var';
    const batch = node.outputs[k + 1] ?? node.addOutput(graph.uniqueName(`${y.name}.batch_${k === 0 ? 'mean' : 'var'}`), input.type);
    // what read the node's running-statistic output before now reads the updated statistic
    const readers = [...batch.uses];
    const wasOutput = graph.outputs.includes(batch);
    const kept = b.mul(input, b.floatConst([momentum], [], `${b.namePrefix}/momentum`), { before: next });
    const added = b.mul(batch, b.floatConst([1 - momentum], [], `${b.namePrefix}/one_minus_momentum`), { before: next });
    const updated = b.add(kept, added, { before: next, outputNames: [`${y.name}.${role}`], outputTypes: [input.type] });
    for (const use of readers) use.node.setInput(use.index, updated);
    if (wasOutput) graph.outputs = graph.outputs.map((o) => (o === batch ? updated : o));
    result.runningStats.push({ input, batch, updated });
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
    if (node.op === 'BatchNormalization') batchNormToTraining(node, result, model, b);
    else if (node.op === 'Dropout') dropoutToTraining(node, opts.dropout, result, model, b);
  }
  return result;
}
