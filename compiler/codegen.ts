// The typed module of a compiled folder: `model.ts` (with `model.js` and `model.d.ts` compiled
// from it) declares the model's input and output names, element types and shapes as types, the
// compiled rates as a literal union and what the manifest knows of each rate (MACs, parameters,
// and accuracy / latency once an eval recorded them), and `load()` returns a handle whose
// `run({ input })` is checked by the TypeScript compiler: a misspelt input, a wrong dtype or a
// wrong static dimension is a compile error in the user's program, not a run-time surprise.
//
// Written with ts-morph (the only module that uses it): the declarations are built as
// structures, and the .js/.d.ts are emitted from an in-memory project without the standard
// library (every exported declaration has an explicit type, so declaration emit needs none, and
// skipping lib.d.ts keeps the emit to a fraction of a second once ts-morph is loaded).
//
// The generated code touches slicec's runtime in one place, `openRuntime` (see
// compiler/codegen-adapters.ts), so what serves the model can be switched without changing the
// types users program against.

import * as path from 'node:path';
import type { Manifest, TensorSignature } from './artifacts.js';
import { readCompiledManifest, writeAtomic, writeCompiledManifest } from './compiled-folder.js';
import { ErrorCodes, isUserError, userError } from './diagnostics.js';
import { ADAPTERS, type RuntimeAdapter } from './codegen-adapters.js';
import type { PropertySignatureStructure } from 'ts-morph';

export type { RuntimeAdapter };

export interface CodegenOptions {
  /** Which runtime the generated `load()` drives (default 'sliced-model'). */
  runtime?: RuntimeAdapter;
  /** Module specifier the adapter imports (default 'slicec/runtime'). */
  runtimeModule?: string;
}

/** The files the typed module consists of, relative to the compiled folder. */
export const MODULE_FILES = ['model.ts', 'model.js', 'model.d.ts', 'package.json'] as const;

/** Element types the runtime carries: manifest short name → runtime dtype and JS array type. */
const ELEMENT_TYPES: Record<string, { dtype: string; array: string }> = {
  f32: { dtype: 'float32', array: 'Float32Array' },
  f64: { dtype: 'float64', array: 'Float64Array' },
  f16: { dtype: 'float16', array: 'Uint16Array' },
  i8: { dtype: 'int8', array: 'Int8Array' },
  i16: { dtype: 'int16', array: 'Int16Array' },
  i32: { dtype: 'int32', array: 'Int32Array' },
  i64: { dtype: 'int64', array: 'BigInt64Array' },
  u8: { dtype: 'uint8', array: 'Uint8Array' },
  u16: { dtype: 'uint16', array: 'Uint16Array' },
  u32: { dtype: 'uint32', array: 'Uint32Array' },
  u64: { dtype: 'uint64', array: 'BigUint64Array' },
  bool: { dtype: 'bool', array: 'Uint8Array' },
};

/** Rate entry fields the generated module reads; accuracy and latency appear once measured. */
interface RateFacts {
  rate: number;
  activeGroups: number;
  macs: number;
  macRatio: number;
  parameters: number;
  accuracy?: number;
  latencyMs?: number;
}

function propertyName(name: string): string {
  return /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(name) ? name : JSON.stringify(name);
}

function describeShape(t: TensorSignature): string {
  return `${t.dtype}[${t.shape ? t.shape.map((d) => d ?? '?').join(',') : '*'}]`;
}

/** `readonly [number, 1, 28, 28]`: static dims as literals, symbolic or unknown ones as number. */
function shapeType(t: TensorSignature): string {
  if (!t.shape) return 'readonly number[]';
  return `readonly [${t.shape.map((d) => (typeof d === 'number' ? String(d) : 'number')).join(', ')}]`;
}

function tensorType(t: TensorSignature): string {
  const element = ELEMENT_TYPES[t.dtype];
  if (!element) {
    throw userError(ErrorCodes.UNSUPPORTED, `tensor ${t.name} has element type ${t.dtype}, which the runtime cannot carry`, {
      expected: `one of ${Object.keys(ELEMENT_TYPES).join(', ')}`,
      found: t.dtype,
      hint: 'the compiled graphs are usable from any ONNX runtime; only the typed module is not written',
    });
  }
  return `Tensor<'${element.dtype}', ${element.array}, ${shapeType(t)}>`;
}

function rateFacts(manifest: Manifest): RateFacts[] {
  return manifest.rates.map((r) => {
    const extra = r as { accuracy?: unknown; latencyMs?: unknown };
    return {
      rate: r.rate, activeGroups: r.activeGroups, macs: r.macs, macRatio: r.macRatio, parameters: r.parameters,
      ...(typeof extra.accuracy === 'number' ? { accuracy: extra.accuracy } : {}),
      ...(typeof extra.latencyMs === 'number' ? { latencyMs: extra.latencyMs } : {}),
    };
  });
}

/** The text of model.ts for a manifest. */
export async function moduleSource(manifest: Manifest, options: CodegenOptions = {}): Promise<string> {
  const { IndentationText, Project, QuoteKind, StructureKind, VariableDeclarationKind } = await import('ts-morph');
  const adapter = ADAPTERS[options.runtime ?? 'sliced-model'](options.runtimeModule ?? 'slicec/runtime');
  const project = new Project({
    useInMemoryFileSystem: true,
    manipulationSettings: { indentationText: IndentationText.TwoSpaces, quoteKind: QuoteKind.Single, useTrailingCommas: true },
  });
  const file = project.createSourceFile('model.ts');
  const rates = rateFacts(manifest);
  const tensors = (list: TensorSignature[]): PropertySignatureStructure[] => list.map((t) => ({
    kind: StructureKind.PropertySignature, name: propertyName(t.name), isReadonly: true, type: tensorType(t), docs: [describeShape(t)],
  }));

  file.addImportDeclaration({ moduleSpecifier: 'node:url', namedImports: ['fileURLToPath'] });
  file.addImportDeclarations(adapter.imports);
  file.addTypeAlias({ isExported: true, name: 'Rate', type: rates.map((r) => String(r.rate)).join(' | '), docs: ['A compiled slice rate.'] });
  file.addInterface({
    isExported: true, name: 'Tensor', docs: ['A dense row-major tensor: its element type, its dims and its data.'],
    typeParameters: [{ name: 'D', constraint: 'string' }, { name: 'A' }, { name: 'S', constraint: 'readonly number[]' }],
    properties: [
      { name: 'dtype', isReadonly: true, type: 'D' },
      { name: 'dims', isReadonly: true, type: 'S' },
      { name: 'data', isReadonly: true, type: 'A' },
    ],
  });
  file.addInterface({ isExported: true, name: 'Inputs', docs: ['What `run` takes: every input of the model.'], properties: tensors(manifest.inputs) });
  file.addInterface({ isExported: true, name: 'Outputs', docs: ['What `run` returns: every output of the model.'], properties: tensors(manifest.outputs) });
  file.addInterface({
    isExported: true, name: 'RateInfo', docs: ['What the manifest records of one rate.'],
    properties: [
      { name: 'rate', isReadonly: true, type: 'Rate' },
      { name: 'activeGroups', isReadonly: true, type: 'number' },
      { name: 'macs', isReadonly: true, type: 'number', docs: ['Multiply-accumulates per sample.'] },
      { name: 'macRatio', isReadonly: true, type: 'number', docs: ['MACs relative to rate 1.'] },
      { name: 'parameters', isReadonly: true, type: 'number' },
      { name: 'accuracy', isReadonly: true, hasQuestionToken: true, type: 'number', docs: ['Top-1 accuracy, when a fine-tune or eval recorded it.'] },
      { name: 'latencyMs', isReadonly: true, hasQuestionToken: true, type: 'number', docs: ['Measured latency, when recorded.'] },
    ],
  });
  file.addVariableStatement({
    isExported: true, declarationKind: VariableDeclarationKind.Const, docs: ['The compiled rates, ascending.'],
    declarations: [{ name: 'RATES', type: 'readonly Rate[]', initializer: `[${rates.map((r) => r.rate).join(', ')}]` }],
  });
  file.addVariableStatement({
    isExported: true, declarationKind: VariableDeclarationKind.Const, docs: ['Per-rate facts from the manifest, in the order of RATES.'],
    declarations: [{ name: 'RATE_INFO', type: 'readonly RateInfo[]', initializer: JSON.stringify(rates, null, 2) }],
  });
  for (const [name, list] of [['INPUT_NAMES', manifest.inputs], ['OUTPUT_NAMES', manifest.outputs]] as const) {
    file.addVariableStatement({
      isExported: true, declarationKind: VariableDeclarationKind.Const,
      declarations: [{ name, type: `readonly string[]`, initializer: JSON.stringify(list.map((t) => t.name)) }],
    });
  }
  file.addInterface({
    isExported: true, name: 'LoadOptions',
    properties: [
      { name: 'dir', hasQuestionToken: true, type: 'string', docs: ['The compiled folder (default: the folder of this module).'] },
      { name: 'device', hasQuestionToken: true, type: "'cpu' | 'cuda'" },
      { name: 'workers', hasQuestionToken: true, type: 'number' },
      { name: 'threads', hasQuestionToken: true, type: 'number', docs: ['Intra-op threads per session.'] },
      { name: 'mode', hasQuestionToken: true, type: "'per-rate' | 'elastic'", docs: ['One session per rate graph, or elastic.onnx alone.'] },
    ],
  });
  file.addInterface({
    isExported: true, name: 'RunOptions',
    properties: [
      { name: 'rate', hasQuestionToken: true, type: 'Rate', docs: ['Serve at exactly this rate.'] },
      { name: 'deadlineMs', hasQuestionToken: true, type: 'number', docs: ['Latency objective; the runtime picks the rate.'] },
      { name: 'minAccuracy', hasQuestionToken: true, type: 'number', docs: ['Accuracy floor (needs recorded accuracy).'] },
    ],
  });
  file.addInterface({
    isExported: true, name: 'Timings',
    properties: [
      { name: 'totalMs', isReadonly: true, type: 'number' },
      { name: 'queueMs', isReadonly: true, hasQuestionToken: true, type: 'number' },
      { name: 'serviceMs', isReadonly: true, hasQuestionToken: true, type: 'number' },
    ],
  });
  file.addInterface({
    isExported: true, name: 'RunResult',
    properties: [
      { name: 'outputs', isReadonly: true, type: 'Outputs' },
      { name: 'rate', isReadonly: true, type: 'Rate', docs: ['The rate that served the request.'] },
      { name: 'timings', isReadonly: true, type: 'Timings' },
    ],
  });
  file.addInterface({
    isExported: true, name: 'LoadedModel',
    properties: [{ name: 'rates', isReadonly: true, type: 'readonly Rate[]' }],
    methods: [
      { name: 'run', parameters: [{ name: 'inputs', type: 'Inputs' }, { name: 'options', hasQuestionToken: true, type: 'RunOptions' }], returnType: 'Promise<RunResult>' },
      { name: 'close', returnType: 'Promise<void>' },
    ],
  });
  file.addFunction({
    isExported: true, isAsync: true, name: 'load', docs: ['Load the compiled model for serving.'],
    parameters: [{ name: 'options', type: 'LoadOptions', initializer: '{}' }], returnType: 'Promise<LoadedModel>',
    statements: [
      "const dir = options.dir ?? fileURLToPath(new URL('.', import.meta.url));",
      'const runtime = await openRuntime(dir, options);',
      'return {',
      '  rates: RATES,',
      '  run: async (inputs, runOptions = {}) => {',
      '    const result = await runtime.run(Object.entries(inputs), runOptions);',
      '    return { outputs: result.outputs as unknown as Outputs, rate: result.rate as Rate, timings: result.timings };',
      '  },',
      '  close: () => runtime.close(),',
      '};',
    ],
  });
  file.addInterface({
    name: 'Runtime', leadingTrivia: '// ---- runtime adapter: the only code that touches slicec\'s runtime\n',
    methods: [
      {
        name: 'run',
        parameters: [{ name: 'feeds', type: '[string, Tensor<string, unknown, readonly number[]>][]' }, { name: 'options', type: 'RunOptions' }],
        returnType: 'Promise<{ outputs: Record<string, unknown>; rate: number; timings: Timings }>',
      },
      { name: 'close', returnType: 'Promise<void>' },
    ],
  });
  file.addFunction({
    isAsync: true, name: 'openRuntime', parameters: [{ name: 'dir', type: 'string' }, { name: 'options', type: 'LoadOptions' }],
    returnType: 'Promise<Runtime>', statements: adapter.body,
  });
  const header = `// Typed module of ${manifest.source.name.replace(/\s+/g, ' ')}, compiled by slicec (${manifest.format}, ${manifest.groups} groups).\n` +
    '// Generated by `slicec codegen` from manifest.json: regenerate it rather than edit it.\n\n';
  return header + file.getFullText();
}

/** model.js and model.d.ts compiled from model.ts (ES2022 modules). */
export async function compileModule(source: string): Promise<{ js: string; dts: string }> {
  const { Project, ts } = await import('ts-morph');
  const project = new Project({
    useInMemoryFileSystem: true,
    compilerOptions: {
      target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ES2022, moduleResolution: ts.ModuleResolutionKind.Bundler,
      declaration: true, strict: true, noLib: true, types: [], skipLibCheck: true,
    },
  });
  project.createSourceFile('/model.ts', source);
  const out = project.emitToMemory();
  const text = (name: string): string => {
    const f = out.getFiles().find((e) => e.filePath === name);
    if (!f) throw new Error(`codegen: the TypeScript emit produced no ${name}`);
    return f.text;
  };
  return { js: text('/model.js'), dts: text('/model.d.ts') };
}

/** Writes the typed module into `dir` (each file atomically); returns the files, relative. */
export async function writeModule(dir: string, manifest: Manifest, options: CodegenOptions = {}): Promise<string[]> {
  const source = await moduleSource(manifest, options);
  const { js, dts } = await compileModule(source);
  // model.js is an ES module: the package.json beside it says so to Node.js
  const contents: Record<(typeof MODULE_FILES)[number], string> = {
    'model.ts': source, 'model.js': js, 'model.d.ts': dts, 'package.json': `${JSON.stringify({ type: 'module', types: './model.d.ts', main: './model.js' }, null, 2)}\n`,
  };
  for (const name of MODULE_FILES) writeAtomic(path.join(dir, name), contents[name]);
  return [...MODULE_FILES];
}

/**
 * compile()'s call: the typed module into the output stage, or, for a model whose tensors the
 * runtime cannot carry (strings, complex numbers, ...), a note and no module.
 */
export async function writeModuleOrNote(dir: string, manifest: Manifest, warn: (text: string) => void): Promise<string[]> {
  try {
    return await writeModule(dir, manifest);
  } catch (e) {
    if (!isUserError(e) || e.code !== ErrorCodes.UNSUPPORTED) throw e;
    warn(`note: no typed module (model.ts) written: ${e.message}`);
    return [];
  }
}

/** `slicec codegen DIR`: (re)writes the typed module of a compiled folder and lists it in the manifest. */
export async function codegen(dir: string, options: CodegenOptions = {}): Promise<string[]> {
  const manifest = readCompiledManifest(dir);
  const files = await writeModule(dir, manifest, options);
  writeCompiledManifest(dir, { ...manifest, module: { files } });
  return files.map((f) => path.join(dir, f));
}
