// cloneModel: the copy encodes to the same bytes, shares no graph objects with the source, and
// maps every value and node; edits to the copy leave the source as it was.

import { describe, expect, it } from 'vitest';
import { cloneModel } from '../compiler/clone.js';
import { encodeModel, readModel } from '../compiler/onnx-codec.js';
import { Tensor } from '../compiler/tensor.js';
import { fixtureModels } from './helpers/models.js';

describe('cloneModel', () => {
  for (const fixture of fixtureModels()) {
    it(`${fixture.name}: same bytes, disjoint objects, complete map`, () => {
      const model = readModel(fixture.file);
      const before = encodeModel(model);
      const { model: copy, map } = cloneModel(model);
      expect(Buffer.from(encodeModel(copy)).equals(Buffer.from(before))).toBe(true);
      expect(map.nodes.size).toBe(model.graph.nodes.length);
      // counted, not asserted one by one: a failing toBe on IR objects prints the whole graph
      let wrong = 0;
      for (const [node, c] of map.nodes) {
        if (c === node || c.graph !== copy.graph) wrong++;
        c.inputs.forEach((v, i) => {
          if (v !== (node.inputs[i] ? map.values.get(node.inputs[i]!) : null)) wrong++;
        });
      }
      for (const v of [...model.graph.inputs, ...model.graph.initializers]) if (map.values.get(v)?.name !== v.name) wrong++;
      expect(wrong).toBe(0);

      const init = copy.graph.initializers[0]!;
      copy.graph.setConstant(init, Tensor.float32([1], [42]));
      copy.graph.nodes[0]!.setInt('copied', 1);
      expect(Buffer.from(encodeModel(model)).equals(Buffer.from(before))).toBe(true);
    });
  }
});
