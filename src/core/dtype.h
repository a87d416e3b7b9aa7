// Storage dtypes of model files, and the compute precision seam.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace lcmd {

enum class DType { F32, F16, BF16, I64, I32, I16, I8, U8, F64, BOOL };

size_t dtype_size(DType t);
const char* dtype_name(DType t);          // safetensors spelling: "F32", "F16", ...
bool parse_dtype(const std::string& s, DType* out);

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);             // round to nearest even, as torch's .half()
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);            // round to nearest even

// Copies or widens n stored values of a float dtype (F32, F16, BF16, F64; little-endian, possibly
// unaligned) to float32, on all threads for large n. Other dtypes: std::invalid_argument.
void convert_to_f32(const uint8_t* src, DType dtype, int64_t n, float* dst);
// n float32 values stored as F32, F16 or BF16 (round to nearest even); dst may be unaligned.
void convert_from_f32(const float* src, int64_t n, DType dtype, uint8_t* dst);
bool is_float_dtype(DType d);  // F32, F16, BF16, F64

// How conv/matmul weights and activations are computed (ops::Conv2d, ops::Linear):
//   FP32: float32 throughout (the reference; Winograd 3x3 convolutions where faster).
//   BF16: bfloat16 weights and activations, float32 accumulation and output.
//   INT8: int8 weights (symmetric, per output channel) and uint8 activations (per tensor, the
//         range [min, max] of each input with a zero point; no calibration), int32
//         accumulation, float32 bias and output.
// Names: "fp32", "bf16", "int8".
enum class Precision { FP32, BF16, INT8 };
const char* precision_name(Precision p);
bool parse_precision(const std::string& s, Precision* out);

}  // namespace lcmd
