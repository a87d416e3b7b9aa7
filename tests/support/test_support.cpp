#include "support/test_support.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "core/error.h"

namespace lcmd::test {

namespace fs = std::filesystem;

fs::path shared_dir() {
  if (const char* env = std::getenv("LCMD_SHARED")) return env;
  return LCMD_SHARED_DIR;
}

fs::path golden_dir() { return shared_dir() / "golden"; }

void expect_model_error(const std::function<void()>& action, const std::vector<std::string>& needles) {
  try {
    action();
    ADD_FAILURE() << "no ModelError was thrown";
  } catch (const ModelError& e) {
    const std::string message = e.what();
    for (const std::string& needle : needles)
      EXPECT_NE(message.find(needle), std::string::npos) << "'" << needle << "' is not in: " << message;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected a ModelError, got: " << e.what();
  }
}

Npy load_npy(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  char magic[6];
  in.read(magic, 6);
  if (std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path.string() + ": not a .npy file");
  uint8_t ver[2];
  in.read(reinterpret_cast<char*>(ver), 2);
  uint32_t header_len = 0;
  if (ver[0] == 1) {
    uint16_t l;
    in.read(reinterpret_cast<char*>(&l), 2);
    header_len = l;
  } else {
    in.read(reinterpret_cast<char*>(&header_len), 4);
  }
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  Npy npy;
  auto field = [&](const std::string& key) {
    size_t p = header.find("'" + key + "'");
    if (p == std::string::npos) throw std::runtime_error(path.string() + ": header lacks " + key);
    return p + key.size() + 3;
  };
  size_t p = header.find('\'', field("descr"));
  npy.dtype = header.substr(p + 1, header.find('\'', p + 1) - p - 1);
  if (header.find("True", field("fortran_order")) == field("fortran_order") + 1)
    throw std::runtime_error(path.string() + ": fortran order not supported");
  size_t s0 = header.find('(', field("shape")), s1 = header.find(')', s0);
  std::stringstream ss(header.substr(s0 + 1, s1 - s0 - 1));
  std::string tok;
  while (std::getline(ss, tok, ','))
    if (tok.find_first_not_of(' ') != std::string::npos) npy.shape.push_back(std::stoll(tok));
  size_t n = 1;
  for (auto d : npy.shape) n *= static_cast<size_t>(d);
  if (npy.dtype == "<f4") {
    npy.f32.resize(n);
    in.read(reinterpret_cast<char*>(npy.f32.data()), n * 4);
  } else if (npy.dtype == "<i8") {
    npy.i64.resize(n);
    in.read(reinterpret_cast<char*>(npy.i64.data()), n * 8);
  } else if (npy.dtype == "|u1") {
    npy.u8.resize(n);
    in.read(reinterpret_cast<char*>(npy.u8.data()), n);
  } else {
    throw std::runtime_error(path.string() + ": unsupported dtype " + npy.dtype);
  }
  if (!in) throw std::runtime_error(path.string() + ": truncated");
  return npy;
}

Tensor load_npy_tensor(const fs::path& path) {
  Npy npy = load_npy(path);
  if (npy.dtype != "<f4") throw std::runtime_error(path.string() + ": expected float32");
  return Tensor::from(npy.shape, npy.f32.data());
}

double rel_l2(const float* a, const float* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

double max_abs_diff(const float* a, const float* ref, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - ref[i]);
    if (!(d <= m)) m = d;  // NaN propagates as a failure
  }
  return m;
}

double max_abs(const float* ref, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(static_cast<double>(ref[i])));
  return m;
}

std::string check_close(const float* out, const float* ref, size_t n, double rel, double abs_frac) {
  const double r = rel_l2(out, ref, n), a = max_abs_diff(out, ref, n), m = max_abs(ref, n);
  if (r <= rel && a <= abs_frac * m) return "";
  std::ostringstream os;
  os << "rel_l2=" << r << " (bound " << rel << "), max_abs_diff=" << a << " (bound " << abs_frac * m
     << " = " << abs_frac << " * max|ref| " << m << ")";
  return os.str();
}

std::string check_image_close(const std::vector<uint8_t>& rgb, const fs::path& ref_uint8_npy, int max_diff,
                              double mean_diff) {
  const Npy ref = load_npy(ref_uint8_npy);
  if (rgb.size() != ref.u8.size())
    return "image has " + std::to_string(rgb.size()) + " values, " + ref_uint8_npy.string() + " has " +
           std::to_string(ref.u8.size());
  int worst = 0;
  double sum = 0;
  for (size_t i = 0; i < rgb.size(); ++i) {
    const int d = std::abs(static_cast<int>(rgb[i]) - static_cast<int>(ref.u8[i]));
    worst = std::max(worst, d);
    sum += d;
  }
  const double mean = rgb.empty() ? 0 : sum / static_cast<double>(rgb.size());
  if (worst <= max_diff && mean <= mean_diff) return "";
  std::ostringstream os;
  os << "uint8 image vs " << ref_uint8_npy.filename().string() << ": max diff " << worst << " (bound " << max_diff
     << "), mean diff " << mean << " (bound " << mean_diff << ")";
  return os.str();
}

TempDir::TempDir() {
  std::random_device rd;
  for (int attempt = 0; attempt < 100; ++attempt) {
    fs::path p = fs::temp_directory_path() / ("lcmd-test-" + std::to_string(rd()));
    if (fs::create_directory(p)) {
      path_ = p;
      return;
    }
  }
  throw std::runtime_error("cannot create a temporary directory");
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

}  // namespace lcmd::test
