// Sinusoidal embeddings of the LCM pipeline: the guidance-scale ("w") embedding that feeds
// the UNet's time_embedding.cond_proj, and the timestep embedding (diffusers `Timesteps`).
//
// Both are computed in float32 step by step as torch does. This matters: the guidance
// embedding multiplies frequencies by w*1000 (7000 at guidance 8), so a frequency that is
// one float ulp off moves sin/cos by ~1e-4. Doing it in double is *less* faithful, and so is
// libm's expf: the frequencies use torch's vectorized exp (SLEEF's algorithm). sin/cos use
// libm, which is within an ulp of torch's (6e-8 on the golden data).
#pragma once
#include <vector>

namespace lcmd {

// LatentConsistencyModelPipeline.get_guidance_scale_embedding(w = guidance_scale - 1, dim):
//   w *= 1000; f_i = exp(i * -(ln 10000 / (dim/2 - 1))); [sin(w f), cos(w f)] (+ a zero if
//   dim is odd). Returns dim floats. dim must be >= 4 (the divisor dim/2 - 1 must be > 0).
// guidance_scale is a double because diffusers subtracts 1 from the Python float before
// rounding to float32; rounding first (e.g. 2.3f - 1) can land an ulp away, which w*1000
// amplifies to ~1e-4 in the embedding.
std::vector<float> guidance_scale_embedding(double guidance_scale, int dim);

// diffusers get_timestep_embedding for one timestep, as Timesteps(dim, flip_sin_to_cos,
// freq_shift) calls it: f_i = exp(-ln(10000) * i / (dim/2 - freq_shift)), then
// [sin(t f), cos(t f)], or [cos, sin] when flip_sin_to_cos (the SD UNet); a zero is appended
// when dim is odd. Returns dim floats. dim must be >= 2.
std::vector<float> timestep_embedding(int timestep, int dim, bool flip_sin_to_cos = true, float freq_shift = 0);

}  // namespace lcmd
