// Helpers shared by every test program: the reference data folder, .npy files, error
// measures with the golden README's definitions, and temporary directories.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace lcmd::test {

// ../shared (or $LCMD_SHARED when set). Read-only: tests never write there.
std::filesystem::path shared_dir();
std::filesystem::path golden_dir();  // shared_dir()/golden

// A .npy file (little-endian, C order). Float arrays come back as f32.
struct Npy {
  std::vector<int64_t> shape;
  std::string dtype;                // "<f4", "<i8", "|u1"
  std::vector<float> f32;           // for <f4
  std::vector<int64_t> i64;         // for <i8
  std::vector<uint8_t> u8;          // for |u1
};
Npy load_npy(const std::filesystem::path& path);
Tensor load_npy_tensor(const std::filesystem::path& path);  // f32 only, shape as stored

// ||a - b||_2 / ||b||_2 and max |a - b|, max |b|.
double rel_l2(const float* a, const float* ref, size_t n);
double max_abs_diff(const float* a, const float* ref, size_t n);
double max_abs(const float* ref, size_t n);

// The fp32 bound of golden/README.md: rel L2 <= 1e-4 and max abs <= 1e-3 * max|ref|.
// Returns an empty string when met, otherwise a description for the failure message.
std::string check_close(const float* out, const float* ref, size_t n, double rel = 1e-4, double abs_frac = 1e-3);

// The golden README's bound for final 8-bit images: max abs diff <= max_diff and mean abs diff
// <= mean_diff against the reference .npy (uint8, HWC). Empty when met, else a description.
std::string check_image_close(const std::vector<uint8_t>& rgb, const std::filesystem::path& ref_uint8_npy,
                              int max_diff = 2, double mean_diff = 0.01);

// `action` must throw a ModelError whose message holds every needle; a test failure otherwise
// (nothing thrown, another exception, a needle missing).
void expect_model_error(const std::function<void()>& action, const std::vector<std::string>& needles);

// A fresh directory under the system temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace lcmd::test
