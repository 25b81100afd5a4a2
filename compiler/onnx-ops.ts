// Every operator of the default ONNX domain (ai.onnx) with the opset that introduced it, as the
// ONNX operator list (docs/Operators.md) gives it, plus the experimental ops of opset 1 that were
// later removed but that onnxruntime still runs. The verifier refuses a default-domain op that is
// not here, or that is newer than the model's opset: no runtime has a kernel for it.
//
// Written as `Name@since` (since 1 when omitted), grouped by the opset that added them.

const LIST = `
Abs Acos@7 Add Affine And ArgMax ArgMin Asin@7 Atan@7 AveragePool BatchNormalization Cast Ceil Clip
Concat Constant Conv ConvTranspose Cos@7 Crop DepthToSpace Div Dropout DynamicSlice Elu Equal Exp
Flatten Floor GRU GRUUnit Gather Gemm GivenTensorFill GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater HardSigmoid Hardmax Identity If ImageScaler InstanceNormalization LRN LSTM LeakyRelu Less
Log LogSoftmax Loop LpNormalization LpPool MatMul Max MaxPool MaxRoiPool Mean Min Mul Neg Not Or
PRelu Pad ParametricSoftplus Pow RNN RandomNormal RandomNormalLike RandomUniform RandomUniformLike
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
ReduceSum ReduceSumSquare Relu Reshape Scale ScaledTanh Selu Shape Sigmoid Size Slice Softmax
Sin@7 Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan@7 Tanh Tile TopK Transpose Unsqueeze
Upsample Xor
Multinomial@7 Expand@8 Scan@8
Acosh@9 Asinh@9 Atanh@9 Compress@9 ConstantOfShape@9 Cosh@9 Erf@9 EyeLike@9 IsNaN@9 MaxUnpool@9
MeanVarianceNormalization@9 NonZero@9 OneHot@9 Scatter@9 Shrink@9 Sign@9 Sinh@9 TfIdfVectorizer@9
Where@9
ConvInteger@10 DequantizeLinear@10 IsInf@10 MatMulInteger@10 Mod@10 NonMaxSuppression@10
QLinearConv@10 QLinearMatMul@10 QuantizeLinear@10 Resize@10 ReverseSequence@10 RoiAlign@10
StringNormalizer@10 ThresholdedRelu@10
BitShift@11 ConcatFromSequence@11 CumSum@11 Det@11 DynamicQuantizeLinear@11 GatherElements@11
GatherND@11 Range@11 Round@11 ScatterElements@11 ScatterND@11 SequenceAt@11 SequenceConstruct@11
SequenceEmpty@11 SequenceErase@11 SequenceInsert@11 SequenceLength@11 SplitToSequence@11 Unique@11
Celu@12 Einsum@12 GreaterOrEqual@12 LessOrEqual@12 NegativeLogLikelihoodLoss@12
SoftmaxCrossEntropyLoss@12
HardSwish@14 Trilu@14
Bernoulli@15 CastLike@15 Optional@15 OptionalGetElement@15 OptionalHasElement@15
GridSample@16
BlackmanWindow@17 DFT@17 HammingWindow@17 HannWindow@17 LayerNormalization@17 MelWeightMatrix@17
STFT@17 SequenceMap@17
BitwiseAnd@18 BitwiseNot@18 BitwiseOr@18 BitwiseXor@18 CenterCropPad@18 Col2Im@18
GroupNormalization@18 Mish@18
DeformConv@19
AffineGrid@20 Gelu@20 ImageDecoder@20 RegexFullMatch@20 StringConcat@20 StringSplit@20
Attention@23 RMSNormalization@23 RotaryEmbedding@23
Swish@24 TensorScatter@24
`;

const SINCE = new Map<string, number>(
  LIST.trim().split(/\s+/).map((entry) => {
    const [name, since] = entry.split('@');
    return [name!, since ? Number(since) : 1];
  }),
);

/** The newest default-domain opset slicec accepts (the newest onnxruntime-node runs). */
export const MAX_OPSET = 26;

/** The opset that introduced a default-domain op, or undefined when ONNX defines no such op. */
export function opIntroducedIn(op: string): number | undefined {
  return SINCE.get(op);
}
