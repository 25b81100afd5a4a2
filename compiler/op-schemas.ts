// Signatures of default-domain ONNX ops, per opset: how many inputs and outputs a node may have,
// which attributes it must carry and of which kind. The verifier checks nodes against this table;
// builders and passes read attribute defaults from it. Ops absent from the table (and every
// non-default domain) are not checked.
//
// Each op lists the opset versions where its signature changed; a model at opset v uses the
// newest variant with `since <= v`. Attributes are written compactly as
// `name:kind` (optional), `!name:kind` (required) or `name:kind=default`, e.g.
// `'!kernel_shape:ints group:int=1 auto_pad:string=NOTSET'`.
//
// Attributes the table does not name are not rejected: old opsets carry legacy attributes
// (`consumed_inputs`, `broadcast`, `is_test`) that exporters still write.

export type AttrKind = 'float' | 'int' | 'string' | 'tensor' | 'floats' | 'ints' | 'strings' | 'tensors' | 'graph' | 'graphs';

export type AttrDefault = number | string | number[];

export interface AttrSpec {
  kind: AttrKind;
  required: boolean;
  default?: AttrDefault;
}

export interface OpSchema {
  op: string;
  /** First opset version this signature applies to. */
  since: number;
  minInputs: number;
  /** Infinity for variadic ops. */
  maxInputs: number;
  minOutputs: number;
  maxOutputs: number;
  attributes: ReadonlyMap<string, AttrSpec>;
  /** Inputs below `minInputs` that may still be omitted (Loop's `M` and `cond`). */
  omittable: readonly number[];
  /** Inputs that hold indices, shapes or axes: when constant they must be int32 or int64. */
  indexInputs: readonly number[];
}

const N = Infinity;
const KINDS = new Set<string>(['float', 'int', 'string', 'tensor', 'floats', 'ints', 'strings', 'tensors', 'graph', 'graphs']);

interface VariantSpec {
  since: number;
  inputs: [number, number];
  outputs: [number, number];
  attrs?: string;
  omittable?: number[];
  indexInputs?: number[];
}

const table = new Map<string, OpSchema[]>();

function parseDefault(kind: AttrKind, text: string): AttrDefault {
  if (kind === 'string') return text;
  if (kind === 'ints' || kind === 'floats') return text === '' ? [] : text.split(',').map(Number);
  return Number(text);
}

function parseAttrs(op: string, text: string): Map<string, AttrSpec> {
  const attrs = new Map<string, AttrSpec>();
  for (const item of text.split(/\s+/)) {
    if (item === '') continue;
    const match = /^(!?)([A-Za-z_][A-Za-z0-9_]*):([a-z]+)(?:=(.*))?$/.exec(item);
    if (!match || !KINDS.has(match[3]!)) throw new Error(`op-schemas: bad attribute spec ${JSON.stringify(item)} for ${op}`);
    const kind = match[3] as AttrKind;
    const spec: AttrSpec = { kind, required: match[1] === '!' };
    if (match[4] !== undefined) spec.default = parseDefault(kind, match[4]);
    attrs.set(match[2]!, spec);
  }
  return attrs;
}

function define(ops: string | string[], ...variants: VariantSpec[]): void {
  for (const op of Array.isArray(ops) ? ops : [ops]) {
    const schemas = variants.map((v): OpSchema => ({
      op,
      since: v.since,
      minInputs: v.inputs[0],
      maxInputs: v.inputs[1],
      minOutputs: v.outputs[0],
      maxOutputs: v.outputs[1],
      attributes: parseAttrs(op, v.attrs ?? ''),
      omittable: v.omittable ?? [],
      indexInputs: v.indexInputs ?? [],
    }));
    schemas.sort((a, b) => a.since - b.since);
    table.set(op, schemas);
  }
}

const one: [number, number] = [1, 1];
const two: [number, number] = [2, 2];

// ---- elementwise

define(
  ['Abs', 'Neg', 'Reciprocal', 'Sqrt', 'Exp', 'Log', 'Sigmoid', 'Tanh', 'Relu', 'Softsign', 'Softplus', 'Erf',
    'Floor', 'Ceil', 'Round', 'Sign', 'IsNaN', 'Not', 'Identity', 'HardSwish', 'Sin', 'Cos', 'Tan', 'Asin',
    'Acos', 'Atan', 'Sinh', 'Cosh', 'Asinh', 'Acosh', 'Atanh', 'BitwiseNot', 'Mish'],
  { since: 1, inputs: one, outputs: one },
);
define(
  ['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Equal', 'Greater', 'Less', 'GreaterOrEqual', 'LessOrEqual', 'And', 'Or',
    'Xor', 'PRelu', 'BitwiseAnd', 'BitwiseOr', 'BitwiseXor'],
  { since: 1, inputs: two, outputs: one },
);
define('Mod', { since: 10, inputs: two, outputs: one, attrs: 'fmod:int=0' });
define('BitShift', { since: 11, inputs: two, outputs: one, attrs: '!direction:string' });
define(['Max', 'Min', 'Sum', 'Mean'], { since: 1, inputs: [1, N], outputs: one });
define('LeakyRelu', { since: 1, inputs: one, outputs: one, attrs: 'alpha:float=0.01' });
define('Elu', { since: 1, inputs: one, outputs: one, attrs: 'alpha:float=1' });
define('Celu', { since: 12, inputs: one, outputs: one, attrs: 'alpha:float=1' });
define('ThresholdedRelu', { since: 10, inputs: one, outputs: one, attrs: 'alpha:float=1' });
define('Selu', { since: 1, inputs: one, outputs: one, attrs: 'alpha:float=1.67326 gamma:float=1.0507' });
define('HardSigmoid', { since: 1, inputs: one, outputs: one, attrs: 'alpha:float=0.2 beta:float=0.5' });
define('Shrink', { since: 9, inputs: one, outputs: one, attrs: 'bias:float=0 lambd:float=0.5' });
define('Gelu', { since: 20, inputs: one, outputs: one, attrs: 'approximate:string=none' });
define('IsInf', { since: 10, inputs: one, outputs: one, attrs: 'detect_negative:int=1 detect_positive:int=1' });
define(
  'Clip',
  { since: 1, inputs: one, outputs: one, attrs: 'min:float max:float' },
  { since: 11, inputs: [1, 3], outputs: one },
);
define(
  'Cast',
  { since: 1, inputs: one, outputs: one, attrs: '!to:string' },
  { since: 6, inputs: one, outputs: one, attrs: '!to:int' },
  { since: 19, inputs: one, outputs: one, attrs: '!to:int saturate:int=1' },
);
define('CastLike', { since: 15, inputs: two, outputs: one, attrs: 'saturate:int=1' });
define('Where', { since: 9, inputs: [3, 3], outputs: one });

// ---- linear algebra and convolution

const convAttrs = 'auto_pad:string=NOTSET dilations:ints group:int=1 kernel_shape:ints pads:ints strides:ints';
define('Conv', { since: 1, inputs: [2, 3], outputs: one, attrs: convAttrs });
define('ConvTranspose', { since: 1, inputs: [2, 3], outputs: one, attrs: `${convAttrs} output_padding:ints output_shape:ints` });
define('ConvInteger', { since: 10, inputs: [2, 4], outputs: one, attrs: convAttrs });
define('QLinearConv', { since: 10, inputs: [8, 9], outputs: one, attrs: convAttrs });
define(
  'Gemm',
  { since: 1, inputs: [3, 3], outputs: one, attrs: 'alpha:float=1 beta:float=1 transA:int=0 transB:int=0' },
  { since: 11, inputs: [2, 3], outputs: one, attrs: 'alpha:float=1 beta:float=1 transA:int=0 transB:int=0' },
);
define('MatMul', { since: 1, inputs: two, outputs: one });
define('MatMulInteger', { since: 10, inputs: [2, 4], outputs: one });
define('QLinearMatMul', { since: 10, inputs: [8, 8], outputs: one });
define('Einsum', { since: 12, inputs: [1, N], outputs: one, attrs: '!equation:string' });
define('Det', { since: 11, inputs: one, outputs: one });

// ---- normalization

define(
  'BatchNormalization',
  { since: 1, inputs: [5, 5], outputs: [1, 5], attrs: 'epsilon:float=1e-5 momentum:float=0.9 spatial:int=1' },
  { since: 9, inputs: [5, 5], outputs: [1, 5], attrs: 'epsilon:float=1e-5 momentum:float=0.9' },
  { since: 14, inputs: [5, 5], outputs: [1, 3], attrs: 'epsilon:float=1e-5 momentum:float=0.9 training_mode:int=0' },
);
define('InstanceNormalization', { since: 1, inputs: [3, 3], outputs: one, attrs: 'epsilon:float=1e-5' });
define('LayerNormalization', { since: 17, inputs: [2, 3], outputs: [1, 3], attrs: 'axis:int=-1 epsilon:float=1e-5 stash_type:int=1' });
define('GroupNormalization', { since: 18, inputs: [3, 3], outputs: one, attrs: '!num_groups:int epsilon:float=1e-5 stash_type:int=1' });
define('LRN', { since: 1, inputs: one, outputs: one, attrs: '!size:int alpha:float=0.0001 beta:float=0.75 bias:float=1' });
define('MeanVarianceNormalization', { since: 9, inputs: one, outputs: one, attrs: 'axes:ints=0,2,3' });
define(
  'Dropout',
  { since: 1, inputs: one, outputs: [1, 2], attrs: 'ratio:float=0.5' },
  { since: 12, inputs: [1, 3], outputs: [1, 2], attrs: 'seed:int' },
);

// ---- pooling

const poolAttrs = 'auto_pad:string=NOTSET !kernel_shape:ints pads:ints strides:ints';
define(
  'MaxPool',
  { since: 1, inputs: one, outputs: one, attrs: poolAttrs },
  { since: 8, inputs: one, outputs: [1, 2], attrs: `${poolAttrs} storage_order:int=0` },
  { since: 10, inputs: one, outputs: [1, 2], attrs: `${poolAttrs} storage_order:int=0 ceil_mode:int=0 dilations:ints` },
);
define(
  'AveragePool',
  { since: 1, inputs: one, outputs: one, attrs: `${poolAttrs} count_include_pad:int=0` },
  { since: 10, inputs: one, outputs: one, attrs: `${poolAttrs} count_include_pad:int=0 ceil_mode:int=0` },
  { since: 19, inputs: one, outputs: one, attrs: `${poolAttrs} count_include_pad:int=0 ceil_mode:int=0 dilations:ints` },
);
define(
  'LpPool',
  { since: 1, inputs: one, outputs: one, attrs: `${poolAttrs} p:float=2` },
  { since: 2, inputs: one, outputs: one, attrs: `${poolAttrs} p:int=2` },
);
define('MaxUnpool', { since: 9, inputs: [2, 3], outputs: one, attrs: '!kernel_shape:ints pads:ints strides:ints' });
define(['GlobalAveragePool', 'GlobalMaxPool'], { since: 1, inputs: one, outputs: one });
define(
  'GlobalLpPool',
  { since: 1, inputs: one, outputs: one, attrs: 'p:float=2' },
  { since: 2, inputs: one, outputs: one, attrs: 'p:int=2' },
);

// ---- shape manipulation

define('Flatten', { since: 1, inputs: one, outputs: one, attrs: 'axis:int=1' });
define(
  'Reshape',
  { since: 1, inputs: one, outputs: one, attrs: 'shape:ints' },
  { since: 5, inputs: two, outputs: one, indexInputs: [1] },
  { since: 14, inputs: two, outputs: one, attrs: 'allowzero:int=0', indexInputs: [1] },
);
define('Transpose', { since: 1, inputs: one, outputs: one, attrs: 'perm:ints' });
define(
  'Concat',
  { since: 1, inputs: [1, N], outputs: one, attrs: 'axis:int=1' },
  { since: 4, inputs: [1, N], outputs: one, attrs: '!axis:int' },
);
define(
  'Split',
  { since: 1, inputs: [1, 2], outputs: [1, N], attrs: 'axis:int=0 split:ints' },
  { since: 2, inputs: one, outputs: [1, N], attrs: 'axis:int=0 split:ints' },
  { since: 13, inputs: [1, 2], outputs: [1, N], attrs: 'axis:int=0', indexInputs: [1] },
  { since: 18, inputs: [1, 2], outputs: [1, N], attrs: 'axis:int=0 num_outputs:int', indexInputs: [1] },
);
define(
  'Slice',
  { since: 1, inputs: one, outputs: one, attrs: 'axes:ints !starts:ints !ends:ints' },
  { since: 10, inputs: [3, 5], outputs: one, indexInputs: [1, 2, 3, 4] },
);
define(
  'Squeeze',
  { since: 1, inputs: one, outputs: one, attrs: 'axes:ints' },
  { since: 13, inputs: [1, 2], outputs: one, indexInputs: [1] },
);
define(
  'Unsqueeze',
  { since: 1, inputs: one, outputs: one, attrs: '!axes:ints' },
  { since: 13, inputs: two, outputs: one, indexInputs: [1] },
);
define('Gather', { since: 1, inputs: two, outputs: one, attrs: 'axis:int=0', indexInputs: [1] });
define('GatherElements', { since: 11, inputs: two, outputs: one, attrs: 'axis:int=0', indexInputs: [1] });
define('GatherND', { since: 11, inputs: two, outputs: one, attrs: 'batch_dims:int=0', indexInputs: [1] });
define('Shape', { since: 1, inputs: one, outputs: one, attrs: 'start:int=0 end:int' });
define('Size', { since: 1, inputs: one, outputs: one });
define('Expand', { since: 8, inputs: two, outputs: one, indexInputs: [1] });
define(
  'Tile',
  { since: 1, inputs: [3, 3], outputs: one },
  { since: 6, inputs: two, outputs: one, indexInputs: [1] },
);
define(
  'Pad',
  { since: 1, inputs: one, outputs: one, attrs: 'mode:string=constant paddings:ints pads:ints value:float=0' },
  { since: 2, inputs: one, outputs: one, attrs: 'mode:string=constant !pads:ints value:float=0' },
  { since: 11, inputs: [2, 3], outputs: one, attrs: 'mode:string=constant', indexInputs: [1] },
  { since: 18, inputs: [2, 4], outputs: one, attrs: 'mode:string=constant', indexInputs: [1, 3] },
);
const resizeAttrs =
  'mode:string=nearest coordinate_transformation_mode:string=half_pixel cubic_coeff_a:float=-0.75 ' +
  'exclude_outside:int=0 extrapolation_value:float=0 nearest_mode:string=round_prefer_floor';
define(
  'Resize',
  { since: 10, inputs: two, outputs: one, attrs: 'mode:string=nearest' },
  // roi and scales are required in opset 11 but exporters leave them empty; accepted as optional
  { since: 11, inputs: [1, 4], outputs: one, attrs: resizeAttrs, indexInputs: [3] },
  { since: 18, inputs: [1, 4], outputs: one, attrs: `${resizeAttrs} antialias:int=0 axes:ints keep_aspect_ratio_policy:string=stretch`, indexInputs: [3] },
);
define(
  'Upsample',
  { since: 1, inputs: one, outputs: one, attrs: 'mode:string=nearest height_scale:float width_scale:float scales:floats' },
  { since: 7, inputs: one, outputs: one, attrs: 'mode:string=nearest !scales:floats' },
  { since: 9, inputs: two, outputs: one, attrs: 'mode:string=nearest' },
);
define('DepthToSpace', { since: 1, inputs: one, outputs: one, attrs: '!blocksize:int mode:string=DCR' });
define('SpaceToDepth', { since: 1, inputs: one, outputs: one, attrs: '!blocksize:int' });
define('Compress', { since: 9, inputs: two, outputs: one, attrs: 'axis:int' });
define('ReverseSequence', { since: 10, inputs: two, outputs: one, attrs: 'batch_axis:int=1 time_axis:int=0' });
define('Trilu', { since: 14, inputs: [1, 2], outputs: one, attrs: 'upper:int=1', indexInputs: [1] });

// ---- constants and generators

define('Constant', { since: 1, inputs: [0, 0], outputs: one, attrs: 'value:tensor value_float:float value_floats:floats value_int:int value_ints:ints value_string:string value_strings:strings' });
define('ConstantOfShape', { since: 9, inputs: one, outputs: one, attrs: 'value:tensor', indexInputs: [0] });
define('Range', { since: 11, inputs: [3, 3], outputs: one });
define('EyeLike', { since: 9, inputs: one, outputs: one, attrs: 'dtype:int k:int=0' });
define('OneHot', { since: 9, inputs: [3, 3], outputs: one, attrs: 'axis:int=-1', indexInputs: [1] });
define('NonZero', { since: 9, inputs: one, outputs: one });
define('CumSum', { since: 11, inputs: two, outputs: one, attrs: 'exclusive:int=0 reverse:int=0', indexInputs: [1] });
define('RandomNormal', { since: 1, inputs: [0, 0], outputs: one, attrs: 'dtype:int=1 mean:float=0 scale:float=1 seed:float !shape:ints' });
define('RandomUniform', { since: 1, inputs: [0, 0], outputs: one, attrs: 'dtype:int=1 high:float=1 low:float=0 seed:float !shape:ints' });
define('RandomNormalLike', { since: 1, inputs: one, outputs: one, attrs: 'dtype:int mean:float=0 scale:float=1 seed:float' });
define('RandomUniformLike', { since: 1, inputs: one, outputs: one, attrs: 'dtype:int high:float=1 low:float=0 seed:float' });
define('Bernoulli', { since: 15, inputs: one, outputs: one, attrs: 'dtype:int seed:float' });

// ---- reductions and selection

const reduceAttrs = 'axes:ints keepdims:int=1';
define(
  'ReduceSum',
  { since: 1, inputs: one, outputs: one, attrs: reduceAttrs },
  { since: 13, inputs: [1, 2], outputs: one, attrs: 'keepdims:int=1 noop_with_empty_axes:int=0', indexInputs: [1] },
);
define(
  ['ReduceMean', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL1', 'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp', 'ReduceSumSquare'],
  { since: 1, inputs: one, outputs: one, attrs: reduceAttrs },
  { since: 18, inputs: [1, 2], outputs: one, attrs: 'keepdims:int=1 noop_with_empty_axes:int=0', indexInputs: [1] },
);
define(['ArgMax', 'ArgMin'], { since: 1, inputs: one, outputs: one, attrs: 'axis:int=0 keepdims:int=1 select_last_index:int=0' });
define(
  ['Softmax', 'LogSoftmax', 'Hardmax'],
  { since: 1, inputs: one, outputs: one, attrs: 'axis:int=1' },
  { since: 13, inputs: one, outputs: one, attrs: 'axis:int=-1' },
);
define(
  'TopK',
  { since: 1, inputs: one, outputs: two, attrs: 'axis:int=-1 !k:int' },
  { since: 10, inputs: two, outputs: two, attrs: 'axis:int=-1', indexInputs: [1] },
  { since: 11, inputs: two, outputs: two, attrs: 'axis:int=-1 largest:int=1 sorted:int=1', indexInputs: [1] },
);
define('Unique', { since: 11, inputs: one, outputs: [1, 4], attrs: 'axis:int sorted:int=1' });
define('NonMaxSuppression', { since: 10, inputs: [2, 5], outputs: one, attrs: 'center_point_box:int=0' });

// ---- scatter

define('Scatter', { since: 9, inputs: [3, 3], outputs: one, attrs: 'axis:int=0', indexInputs: [1] });
define('ScatterElements', { since: 11, inputs: [3, 3], outputs: one, attrs: 'axis:int=0 reduction:string=none', indexInputs: [1] });
define('ScatterND', { since: 11, inputs: [3, 3], outputs: one, attrs: 'reduction:string=none', indexInputs: [1] });

// ---- quantization

define('QuantizeLinear', { since: 10, inputs: [2, 3], outputs: one, attrs: 'axis:int=1 saturate:int=1 block_size:int=0 output_dtype:int=0' });
define('DequantizeLinear', { since: 10, inputs: [2, 3], outputs: one, attrs: 'axis:int=1 block_size:int=0' });
define('DynamicQuantizeLinear', { since: 11, inputs: one, outputs: [3, 3] });

// ---- control flow and recurrent layers

define('If', { since: 1, inputs: one, outputs: [1, N], attrs: '!then_branch:graph !else_branch:graph' });
define('Loop', { since: 1, inputs: [2, N], outputs: [1, N], attrs: '!body:graph', omittable: [0, 1] });
define(
  'Scan',
  { since: 8, inputs: [2, N], outputs: [1, N], attrs: '!body:graph !num_scan_inputs:int directions:ints', omittable: [0] },
  { since: 9, inputs: [1, N], outputs: [1, N], attrs: '!body:graph !num_scan_inputs:int scan_input_axes:ints scan_input_directions:ints scan_output_axes:ints scan_output_directions:ints' },
);
const rnnAttrs = 'activation_alpha:floats activation_beta:floats activations:strings clip:float direction:string=forward hidden_size:int layout:int=0';
define('RNN', { since: 1, inputs: [3, 6], outputs: [0, 2], attrs: rnnAttrs });
define('GRU', { since: 1, inputs: [3, 6], outputs: [0, 2], attrs: `${rnnAttrs} linear_before_reset:int=0` });
define('LSTM', { since: 1, inputs: [3, 8], outputs: [0, 3], attrs: `${rnnAttrs} input_forget:int=0` });

// ---- losses, strings, sequences

define('NegativeLogLikelihoodLoss', { since: 12, inputs: [2, 3], outputs: one, attrs: 'ignore_index:int reduction:string=mean' });
define('SoftmaxCrossEntropyLoss', { since: 12, inputs: [2, 3], outputs: [1, 2], attrs: 'ignore_index:int reduction:string=mean' });
define('StringNormalizer', { since: 10, inputs: one, outputs: one, attrs: 'case_change_action:string=NONE is_case_sensitive:int=0 locale:string stopwords:strings' });
define('SequenceConstruct', { since: 11, inputs: [1, N], outputs: one });
define('SequenceEmpty', { since: 11, inputs: [0, 0], outputs: one, attrs: 'dtype:int' });
define('SequenceAt', { since: 11, inputs: two, outputs: one });
define('SequenceErase', { since: 11, inputs: [1, 2], outputs: one });
define('SequenceInsert', { since: 11, inputs: [2, 3], outputs: one });
define('SequenceLength', { since: 11, inputs: one, outputs: one });
define('SplitToSequence', { since: 11, inputs: [1, 2], outputs: one, attrs: 'axis:int=0 keepdims:int=1' });
define('ConcatFromSequence', { since: 11, inputs: one, outputs: one, attrs: '!axis:int new_axis:int=0' });

/** The signature of a default-domain op at `opset`, or undefined when the table does not know it. */
export function opSchema(op: string, domain: string, opset: number): OpSchema | undefined {
  if (domain !== '' && domain !== 'ai.onnx') return undefined;
  const variants = table.get(op);
  if (!variants) return undefined;
  let found: OpSchema | undefined;
  for (const v of variants) if (v.since <= opset) found = v;
  return found;
}

/** The default of an attribute at `opset` (e.g. Softmax `axis`: 1 before 13, -1 from 13). */
export function attrDefault(op: string, opset: number, attr: string): AttrDefault | undefined {
  return opSchema(op, '', opset)?.attributes.get(attr)?.default;
}

/** Every op the table knows (for docs and tests). */
export function knownOps(): string[] {
  return [...table.keys()].sort();
}
