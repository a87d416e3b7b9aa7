// Layers built from their own stored weights (what a packed model holds) use them in place and
// compute exactly what the original layer computes; stored weights from another precision are
// re-laid out and still agree; unpacking gives PyTorch's values back; hostile layouts are refused.
#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>

#include "ops/ops.h"
#include "ops_test_util.h"

namespace lcmd {
namespace {

using ops::StoredWeights;

std::vector<float> values(const Tensor& t) { return {t.data(), t.data() + t.numel()}; }

// A copy of the stored bytes, as a file would hold them (the layer keeps pointing at them).
struct Copied {
  std::vector<unsigned char> bytes;
  StoredWeights weights;
  explicit Copied(const StoredWeights& w) : bytes(static_cast<const unsigned char*>(w.data), static_cast<const unsigned char*>(w.data) + w.size) {
    weights = {w.layout, bytes.data(), bytes.size()};
  }
};

TEST(StoredWeights, ConvolutionsRebuiltFromTheirStoredWeightsComputeTheSame) {
  const Tensor x = test::random_tensor({1, 16, 16, 32}, 1);
  for (Precision p : {Precision::FP32, Precision::BF16}) {
    for (int kernel : {1, 3}) {
      const Tensor w = test::random_tensor({48, 32, kernel, kernel}, 2), b = test::random_tensor({48}, 3);
      const ops::Conv2d original(w.data(), b.data(), 32, 48, kernel, 1, kernel / 2, p);
      const StoredWeights stored = original.stored_weights();
      ASSERT_FALSE(stored.layout.empty()) << precision_name(p);
      const Copied copy(stored);
      const ops::StoredWeightsUse before = ops::stored_weights_use();
      const ops::Conv2d rebuilt(copy.weights, b.data(), 32, 48, kernel, 1, kernel / 2, p);
      const ops::StoredWeightsUse after = ops::stored_weights_use();
      EXPECT_EQ(after.in_place, before.in_place + 1) << "kernel " << kernel << " " << precision_name(p);
      EXPECT_EQ(values(rebuilt(x)), values(original(x))) << "kernel " << kernel << " " << precision_name(p);

      const Tensor unpacked = ops::unpack_stored_weights(copy.weights, {48, 32, kernel, kernel});
      for (int64_t i = 0; i < w.numel(); ++i)
        ASSERT_EQ(unpacked.data()[i], p == Precision::FP32 ? w.data()[i] : bf16_to_f32(f32_to_bf16(w.data()[i]))) << i;
    }
  }
}

// A bf16 Winograd layer stores its transformed weights ([16, cin, cout]): a layer rebuilt from
// them uses them in place and computes the same bits. An fp32 layer given them, or unpacking
// them, transforms them back: the weights again, up to their bf16 rounding.
TEST(StoredWeights, Bf16WinogradLayersStoreTheirTransformedWeights) {
  if (ops::runnable_precision(Precision::BF16) != Precision::BF16) GTEST_SKIP() << "this CPU computes bf16 in fp32";
  const Tensor w = test::random_tensor({48, 32, 3, 3}, 8), b = test::random_tensor({48}, 9);
  const Tensor x = test::random_tensor({1, 16, 16, 32}, 10);
  const ops::Conv2d winograd(w.data(), b.data(), 32, 48, 3, 1, 1, Precision::BF16, ops::Conv3x3Algorithm::kWinograd);
  const StoredWeights stored = winograd.stored_weights();
  ASSERT_NE(stored.layout.find("\"dims\":[16,32,48]"), std::string::npos) << stored.layout;
  const Copied copy(stored);

  ops::StoredWeightsUse before = ops::stored_weights_use();
  const ops::Conv2d rebuilt(copy.weights, b.data(), 32, 48, 3, 1, 1, Precision::BF16, ops::Conv3x3Algorithm::kWinograd);
  EXPECT_EQ(ops::stored_weights_use().in_place, before.in_place + 1);
  EXPECT_EQ(rebuilt.stored_weights().data, copy.weights.data);
  EXPECT_EQ(values(rebuilt(x)), values(winograd(x)));

  const Tensor unpacked = ops::unpack_stored_weights(copy.weights, {48, 32, 3, 3});
  EXPECT_LT(test::rel_l2(unpacked.data(), w.data(), static_cast<size_t>(w.numel())), 1e-2);
  before = ops::stored_weights_use();
  const ops::Conv2d fp32(copy.weights, b.data(), 32, 48, 3, 1, 1, Precision::FP32);
  EXPECT_EQ(ops::stored_weights_use().relaid_out, before.relaid_out + 1);
  const ops::Conv2d from_unpacked(unpacked.data(), b.data(), 32, 48, 3, 1, 1, Precision::FP32);
  EXPECT_EQ(values(fp32(x)), values(from_unpacked(x)));

  // Built from an fp32 layer's stored weights, it transforms them: as from their values.
  const ops::Conv2d plain(w.data(), b.data(), 32, 48, 3, 1, 1, Precision::FP32);
  const Copied fp32_copy(plain.stored_weights());
  const ops::Conv2d transformed(fp32_copy.weights, b.data(), 32, 48, 3, 1, 1, Precision::BF16,
                                ops::Conv3x3Algorithm::kWinograd);
  EXPECT_EQ(values(transformed(x)), values(winograd(x)));
  EXPECT_THROW(ops::unpack_stored_weights(copy.weights, {48, 32, 1, 1}), std::invalid_argument);
  // Transformed weights for other channel counts, or cut short, are refused, naming the dims or size.
  EXPECT_THROW(ops::Conv2d(copy.weights, b.data(), 32, 32, 3, 1, 1, Precision::BF16, ops::Conv3x3Algorithm::kWinograd),
               std::invalid_argument);
  StoredWeights short_weights = copy.weights;
  short_weights.size -= 2;
  try {
    ops::Conv2d(short_weights, b.data(), 32, 48, 3, 1, 1, Precision::BF16, ops::Conv3x3Algorithm::kWinograd);
    ADD_FAILURE() << "short transformed weights accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("bytes stored"), std::string::npos) << e.what();
  }
}

// An int8 Winograd layer (the int8 mode's VAE) given a packed model's transformed bf16 weights
// quantizes them as they are (counted as relaid out, not used in place) and computes within the
// int8 bound of the fp32 layer.
TEST(StoredWeights, Int8WinogradLayersQuantizeStoredTransformedWeights) {
  if (ops::runnable_precision(Precision::BF16) != Precision::BF16 || ops::runnable_precision(Precision::INT8) != Precision::INT8)
    GTEST_SKIP() << "this CPU lacks bf16 or int8 products";
  const Tensor w = test::random_tensor({48, 32, 3, 3}, 11), b = test::random_tensor({48}, 12);
  const Tensor x = test::random_tensor({1, 16, 16, 32}, 13);
  const ops::Conv2d bf16(w.data(), b.data(), 32, 48, 3, 1, 1, Precision::BF16, ops::Conv3x3Algorithm::kWinograd);
  const Copied copy(bf16.stored_weights());
  const ops::StoredWeightsUse before = ops::stored_weights_use();
  const ops::Conv2d int8(copy.weights, b.data(), 32, 48, 3, 1, 1, Precision::INT8, ops::Conv3x3Algorithm::kWinograd);
  EXPECT_EQ(ops::stored_weights_use().in_place, before.in_place);
  EXPECT_EQ(ops::stored_weights_use().relaid_out, before.relaid_out + 1);
  const std::string kernel = int8.implementation(x.shape());
  EXPECT_EQ(kernel.rfind("int8 winograd-f2", 0), 0u) << kernel;
  const ops::Conv2d fp32(w.data(), b.data(), 32, 48, 3, 1, 1, Precision::FP32);
  const Tensor expected = fp32(x), y = int8(x);
  EXPECT_LT(test::rel_l2(y.data(), expected.data(), static_cast<size_t>(y.numel())), 3e-2);
  EXPECT_GT(test::rel_l2(y.data(), expected.data(), static_cast<size_t>(y.numel())), 1e-5);
}

TEST(StoredWeights, LinearFromBf16StoredWeightsRunsFp32ByRelayingThemOut) {
  const Tensor w = test::random_tensor({40, 24}, 4), b = test::random_tensor({40}, 5), x = test::random_tensor({7, 24}, 6);
  const ops::Linear bf16(w.data(), b.data(), 24, 40, Precision::BF16);
  const Copied copy(bf16.stored_weights());
  const ops::StoredWeightsUse before = ops::stored_weights_use();
  const ops::Linear fp32(copy.weights, b.data(), 24, 40, Precision::FP32);
  EXPECT_EQ(ops::stored_weights_use().relaid_out, before.relaid_out + (bf16.precision() == Precision::BF16 ? 1 : 0));
  // The fp32 layer computes with the bf16-rounded weights exactly.
  Tensor rounded({40, 24});
  for (int64_t i = 0; i < w.numel(); ++i)
    rounded.data()[i] = bf16.precision() == Precision::BF16 ? bf16_to_f32(f32_to_bf16(w.data()[i])) : w.data()[i];
  const ops::Linear reference(rounded.data(), b.data(), 24, 40, Precision::FP32);
  EXPECT_EQ(values(fp32(x)), values(reference(x)));
  EXPECT_EQ(values(ops::unpack_stored_weights(copy.weights, {40, 24})), values(rounded));
}

TEST(StoredWeights, HostileLayoutsAreRefused) {
  const Tensor w = test::random_tensor({256, 64}, 7);  // several outer blocks, so strides matter
  const ops::Linear linear(w.data(), nullptr, 64, 256, Precision::FP32);
  const Copied copy(linear.stored_weights());
  const nlohmann::json good = nlohmann::json::parse(copy.weights.layout);
  auto refused = [&](const std::function<void(nlohmann::json&)>& edit, size_t size_change = 0) {
    nlohmann::json layout = good;
    edit(layout);
    const StoredWeights bad{layout.dump(), copy.bytes.data(), copy.bytes.size() - size_change};
    EXPECT_THROW(ops::Linear(bad, nullptr, 64, 256, Precision::FP32), std::invalid_argument) << layout.dump();
  };
  refused([](auto& l) { l["dims"] = {64, 257}; });
  refused([](auto& l) { l["data_type"] = "s8"; });
  refused([](auto& l) { l["strides"] = {1 << 20, 1}; });
  refused([](auto& l) { l["inner_blks"] = {0}; l["inner_idxs"] = {0}; });
  refused([](auto& l) { l["inner_idxs"] = nlohmann::json::array({5}); l["inner_blks"] = nlohmann::json::array({16}); });
  refused([](auto& l) { l["padded_offsets"] = {1, 0}; });
  refused([](auto& l) {}, 4);  // fewer bytes than the layout needs
  EXPECT_THROW(ops::Linear(StoredWeights{"not json", copy.bytes.data(), copy.bytes.size()}, nullptr, 64, 256, Precision::FP32),
               std::invalid_argument);
  EXPECT_THROW(ops::unpack_stored_weights(copy.weights, {256, 64, 3, 3}), std::invalid_argument);
}

}  // namespace
}  // namespace lcmd
