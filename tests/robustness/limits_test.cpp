// The shared guards behind the robustness suite, unit by unit: checked size arithmetic, tensor
// shapes that would overflow, bounded JSON (depth, duplicate keys, cut messages), the checkpoint
// checksum, and memory admission from a config.
#include <string>

#include "core/bounded_json.h"
#include "core/checked.h"
#include "core/hash.h"
#include "core/tensor.h"
#include "models/model_limits.h"
#include "testing.h"

namespace sw {
namespace {

TEST(Limits, CheckedArithmeticRefusesOverflow) {
  EXPECT_EQ(checked_mul(1 << 20, 1 << 20, "t", "x"), int64_t{1} << 40);
  EXPECT_THROW(checked_mul(int64_t{1} << 40, int64_t{1} << 30, "t", "x"), Error);
  EXPECT_THROW(checked_mul(-1, 2, "t", "x"), Error);
  EXPECT_THROW(checked_add(INT64_MAX, 1, "t", "x"), Error);
  EXPECT_THROW(checked_mul(1 << 20, 1 << 20, "t", "x", 1 << 30), Error);
}

TEST(Limits, TensorShapesThatWrapAreRefused) {
  // 2^32 x 2^32 x 2 elements wraps int64 to 0; the old product allocated 0 bytes.
  EXPECT_THROW(Tensor::empty({int64_t{1} << 32, int64_t{1} << 32, 2}), Error);
  EXPECT_THROW(Tensor::empty({int64_t{1} << 47, 4}), Error);  // 2^49 elements
  EXPECT_THROW(Tensor::empty({3, -1}), Error);
  try {
    Tensor::empty({int64_t{1} << 62, 4});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[tensor]"), std::string::npos) << e.what();
  }
}

TEST(Limits, BoundedJson) {
  EXPECT_EQ(parse_json_bounded(R"({"a": [1, {"b": 2}]})", "f.json")["a"][1]["b"], 2);
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  try {
    parse_json_bounded(deep, "deep.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("deep.json: JSON nests deeper than 32"), std::string::npos) << e.what();
  }
  try {
    parse_json_bounded(R"({"a": {"x": 1, "x": 2}})", "dup.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"x\" twice"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(parse_json_bounded(R"([{"x": 1}, {"x": 2}])", "siblings.json"));  // same key, two objects
  try {
    parse_json_bounded("{\"a\": \"" + std::string(100000, 'z'), "long.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_LT(std::string(e.what()).size(), 300u) << "messages are cut";
  }
}

TEST(Limits, ChecksumSeesEveryFlippedBit) {
  std::string bytes(1000, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
  const uint64_t h = hash64(bytes.data(), bytes.size());
  for (size_t i = 0; i < bytes.size(); i += 37)
    for (int bit = 0; bit < 8; ++bit) {
      std::string b = bytes;
      b[i] ^= static_cast<char>(1 << bit);
      EXPECT_NE(hash64(b.data(), b.size()), h) << "byte " << i << " bit " << bit;
    }
  EXPECT_NE(hash64(bytes.data(), 999), h);
}

TEST(Limits, MemoryAdmissionNamesTheFields) {
  models::ModelConfig c;
  c.d_model = 20000, c.n_layers = 4000;
  models::SizeEstimate e = models::estimate_parameters(c, "big.json");
  EXPECT_GT(e.parameters, 1e12);
  try {
    models::admit_memory(e, 4, 0, "f32 weights", "big.json");
    FAIL();
  } catch (const Error& err) {
    const std::string m = err.what();
    EXPECT_NE(m.find("big.json"), std::string::npos) << m;
    EXPECT_NE(m.find("d_model"), std::string::npos) << m;
    EXPECT_NE(m.find("of memory"), std::string::npos) << m;
  }
  models::ModelConfig small;
  small.d_model = 64, small.n_layers = 2;
  EXPECT_NO_THROW(models::admit_memory(models::estimate_parameters(small, "s.json"), 16, 0, "training", "s.json"));
}

}  // namespace
}  // namespace sw
