// safetensors and atomic files: bit-exact round trips, the on-disk layout against the spec, a
// matrix of malformed files each rejected with a message naming the file and the problem, fuzzed
// inputs that must never crash (run under ASan), and atomic writes that survive a failing writer.
// Every comparison here is exact: the format stores raw bytes, so no tolerance applies.
#include <unistd.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "testing.h"

namespace sw::io {
namespace {

namespace fs = std::filesystem;

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "sw_io_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (fs::path(dir_) / name).string(); }
  // Names in the directory, to show that no temporary file was left behind.
  std::vector<std::string> listing() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  std::string dir_;
};

std::string bytes_of(const Tensor& t) {
  Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.raw_data()), c.nbytes());
}

::testing::AssertionResult same_tensor(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape())
    return ::testing::AssertionFailure() << a.describe() << " vs " << b.describe();
  if (bytes_of(a) != bytes_of(b)) return ::testing::AssertionFailure() << a.describe() << ": bytes differ";
  return ::testing::AssertionSuccess();
}

Tensor bf16_tensor(const std::vector<uint16_t>& bits, const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::bf16);
  std::memcpy(t.raw_data(), bits.data(), bits.size() * 2);
  return t;
}

NamedTensors sample_tensors() {
  const float inf = std::numeric_limits<float>::infinity();
  NamedTensors ts;
  ts.emplace_back("embed.weight", Tensor::from_vector(testing::random_floats(6, 1), {2, 3}));
  // NaN, infinities and -0 must survive as bits, not as values.
  ts.emplace_back("special", Tensor::from_vector(std::vector<float>{NAN, inf, -inf, -0.f}, {4}));
  ts.emplace_back("half", bf16_tensor({0x3f80, 0xffff, 0x7f80, 0x8000, 0x0001}, {5}));
  ts.emplace_back("f64", Tensor::from_vector(std::vector<double>{1e-300, -2.5, 3.0, M_PI, 0, 7}, {3, 1, 2}));
  ts.emplace_back("ids", Tensor::from_vector(std::vector<int32_t>{INT32_MIN, -1, 0, INT32_MAX}, {4}));
  ts.emplace_back("scalar", Tensor::from_vector(std::vector<float>{42.f}, {}));
  ts.emplace_back("empty", Tensor::zeros({0, 3}));
  ts.emplace_back("empty_ids", Tensor::zeros({0}, DType::i32));
  return ts;
}

const Metadata kMeta = {{"format", "pt"}, {"step", "1234"}, {"note", "h\xc3\xa9llo \"quoted\"\n"}};

TEST_F(TempDir, RoundTripIsBitExactAndKeepsOrder) {
  NamedTensors ts = sample_tensors();
  // Over 64 KiB, so the stream's direct-write path for large blocks is exercised too.
  ts.emplace_back("big", Tensor::from_vector(testing::random_floats(300 * 100, 2), {300, 100}));
  save_safetensors(file("a.safetensors"), ts, kMeta);
  SafetensorsFile f = load_safetensors(file("a.safetensors"));
  EXPECT_EQ(f.path, file("a.safetensors"));
  EXPECT_EQ(f.metadata, kMeta);
  ASSERT_EQ(f.tensors.size(), ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    EXPECT_EQ(f.tensors[i].first, ts[i].first);
    EXPECT_TRUE(same_tensor(f.tensors[i].second, ts[i].second)) << ts[i].first;
  }
  EXPECT_TRUE(f.contains("ids"));
  EXPECT_FALSE(f.contains("nope"));
  EXPECT_TRUE(same_tensor(f.at("f64"), ts[3].second));
  EXPECT_EQ(f.at("scalar").ndim(), 0);
  EXPECT_EQ(f.at("empty").numel(), 0);
}

TEST_F(TempDir, StridedViewsAreSavedInLogicalOrder) {
  Tensor m = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  save_safetensors(file("t.safetensors"), {{"mt", m.transpose(0, 1)}});
  Tensor back = load_safetensors(file("t.safetensors")).at("mt");
  EXPECT_EQ(back.shape(), (Shape{3, 2}));
  EXPECT_EQ(back.to_floats(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
}

TEST_F(TempDir, OutputIsDeterministicAndMatchesStreamWriter) {
  NamedTensors ts = sample_tensors();
  save_safetensors(file("a"), ts, kMeta);
  save_safetensors(file("b"), ts, kMeta);
  std::ostringstream os;
  write_safetensors(os, ts, kMeta);
  EXPECT_EQ(read_file(file("a")), read_file(file("b")));
  EXPECT_EQ(read_file(file("a")), os.str());
}

TEST(Safetensors, HeaderBytesFollowTheSpec) {
  NamedTensors ts = sample_tensors();
  std::ostringstream os;
  write_safetensors(os, ts, kMeta);
  const std::string b = os.str();
  ASSERT_GE(b.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(b[i]);  // little-endian
  EXPECT_EQ(n % 8, 0u) << "data must start 8-byte aligned";
  ASSERT_LE(8 + n, b.size());
  const std::string header = b.substr(8, n);
  EXPECT_EQ(header.front(), '{');
  size_t close = header.find_last_of('}');
  EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos) << "padding must be spaces";
  EXPECT_LT(header.size() - close - 1, 8u) << "at most 7 padding spaces";

  auto j = nlohmann::ordered_json::parse(header);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.begin().key(), "__metadata__");
  EXPECT_EQ(j["__metadata__"]["step"], "1234");
  uint64_t expect_begin = 0;
  size_t i = 0;
  for (const auto& [k, v] : j.items()) {
    if (k == "__metadata__") continue;
    ASSERT_LT(i, ts.size());
    EXPECT_EQ(k, ts[i].first);
    EXPECT_EQ(v["dtype"], safetensors_dtype(ts[i].second.dtype()));
    EXPECT_EQ(v["shape"].get<Shape>(), ts[i].second.shape());
    EXPECT_EQ(v["data_offsets"][0].get<uint64_t>(), expect_begin);
    expect_begin += ts[i].second.nbytes();
    EXPECT_EQ(v["data_offsets"][1].get<uint64_t>(), expect_begin);
    EXPECT_EQ(b.substr(8 + n + v["data_offsets"][0].get<uint64_t>(), ts[i].second.nbytes()), bytes_of(ts[i].second));
    ++i;
  }
  EXPECT_EQ(i, ts.size());
  EXPECT_EQ(b.size(), 8 + n + expect_begin);
  EXPECT_STREQ(safetensors_dtype(DType::bf16), "BF16");
  EXPECT_STREQ(safetensors_dtype(DType::f64), "F64");
}

// A file laid out by hand from the spec: length, unpadded header, data; tensors listed out of
// data order in the header come back in data order.
std::string make_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(static_cast<uint64_t>(header.size()) >> (8 * i));
  return out + header + data;
}
std::string make_file(const std::string& header, size_t data_bytes) { return make_file(header, std::string(data_bytes, '\0')); }

TEST(Safetensors, ReadsAHandWrittenFile) {
  int32_t ints[4] = {1, -2, 3, -4};
  double d = -0.5;
  std::string data(reinterpret_cast<const char*>(&d), 8);
  data += std::string(reinterpret_cast<const char*>(ints), 16);
  std::string h = R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[8,24]},)"
                  R"("__metadata__":{"foo":"bar"},"d":{"shape":[],"data_offsets":[0,8],"dtype":"F64"}})";
  SafetensorsFile f = parse_safetensors(make_file(h, data), "hand.safetensors");
  ASSERT_EQ(f.tensors.size(), 2u);
  EXPECT_EQ(f.tensors[0].first, "d");
  EXPECT_EQ(f.tensors[0].second.item(), -0.5);
  EXPECT_EQ(f.tensors[1].first, "test");
  EXPECT_EQ(f.tensors[1].second.shape(), (Shape{2, 2}));
  EXPECT_EQ(f.tensors[1].second.to_doubles(), (std::vector<double>{1, -2, 3, -4}));
  EXPECT_EQ(f.metadata, (Metadata{{"foo", "bar"}}));
  EXPECT_EQ(f.header_bytes, h.size());
  // Whitespace padding after the JSON, an empty header object and ignored extra fields are valid.
  EXPECT_NO_THROW(parse_safetensors(make_file(h + "       ", data), "pad"));
  EXPECT_EQ(parse_safetensors(make_file("{}", ""), "none").tensors.size(), 0u);
  EXPECT_NO_THROW(parse_safetensors(make_file(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":[1]}})", 4), "x"));
}

struct BadCase {
  const char* what;
  std::string bytes;
  std::vector<std::string> expect;  // substrings the message must contain (besides the file name)
};

std::string entry(const std::string& dtype, const std::string& shape, const std::string& offsets) {
  return R"({"dtype":)" + dtype + R"(,"shape":)" + shape + R"(,"data_offsets":)" + offsets + "}";
}
std::string one(const std::string& e) { return R"({"w":)" + e + "}"; }

std::vector<BadCase> bad_cases() {
  std::string len_past(8, '\0');
  len_past[0] = 100;
  std::string huge_len(8, '\0');
  huge_len[7] = 0x7f;
  std::string nested = "{\"w\":" + std::string(40, '[') + std::string(40, ']') + "}";
  return {
      {"empty file", "", {"0 bytes", "shorter than the 8-byte header length"}},
      {"7 bytes", std::string(7, '\0'), {"7 bytes"}},
      {"header length past end", len_past + "{}", {"header length 100", "runs past the end of the file"}},
      {"absurd header length", huge_len + "{}", {"exceeds", "limit"}},
      {"bad json", make_file(R"({"w": {"dtype")", 0), {"not valid JSON"}},
      {"not utf-8", make_file("{\"w\xff\": 1}", 0), {"not valid JSON"}},
      {"not an object", make_file("[1, 2]", 0), {"header is a JSON array", "expected a JSON object"}},
      {"entry not object", make_file(one("3"), 0), {"tensor \"w\" is 3", "expected an object"}},
      {"missing dtype", make_file(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4), {"tensor \"w\"", "missing field \"dtype\""}},
      {"missing shape", make_file(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4), {"missing field \"shape\""}},
      {"missing offsets", make_file(R"({"w":{"dtype":"F32","shape":[1]}})", 4), {"missing field \"data_offsets\""}},
      {"unknown dtype", make_file(one(entry("\"F16\"", "[1]", "[0,2]")), 2), {"tensor \"w\"", "\"dtype\" is \"F16\"", "expected one of"}},
      {"dtype wrong type", make_file(one(entry("4", "[1]", "[0,4]")), 4), {"\"dtype\" is 4"}},
      {"shape wrong type", make_file(one(entry("\"F32\"", "\"1x2\"", "[0,8]")), 8), {"\"shape\" is \"1x2\"", "expected an array"}},
      {"negative dim", make_file(one(entry("\"F32\"", "[1,-2]", "[0,8]")), 8), {"\"shape\"[1] is -2", "non-negative integer"}},
      {"fractional dim", make_file(one(entry("\"F32\"", "[2.5]", "[0,8]")), 8), {"\"shape\"[0] is 2.5"}},
      {"string dim", make_file(one(entry("\"F32\"", "[\"2\"]", "[0,8]")), 8), {"\"shape\"[0] is \"2\""}},
      {"dim past int64", make_file(one(entry("\"F32\"", "[10000000000000000000]", "[0,8]")), 8), {"\"shape\"[0]", "below 2^63"}},
      {"product overflows", make_file(one(entry("\"F32\"", "[4611686018427387904,4611686018427387904]", "[0,8]")), 8),
       {"needs more than 2^64 bytes"}},
      {"bytes overflow to match", make_file(one(entry("\"F32\"", "[4611686018427387904]", "[0,0]")), 0), {"more than 2^64"}},
      {"size mismatch", make_file(one(entry("\"F32\"", "[2]", "[0,12]")), 12), {"shape [2] of F32 needs 8 bytes", "span 12"}},
      {"offsets wrong type", make_file(one(entry("\"F32\"", "[1]", "\"0-4\"")), 4), {"\"data_offsets\" is \"0-4\"", "[begin, end]"}},
      {"offsets three long", make_file(one(entry("\"F32\"", "[1]", "[0,4,8]")), 4), {"\"data_offsets\" is [0,4,8]"}},
      {"offsets negative", make_file(one(entry("\"F32\"", "[1]", "[-4,0]")), 4), {"\"data_offsets\" is [-4,0]"}},
      {"begin after end", make_file(one(entry("\"F32\"", "[1]", "[4,0]")), 4), {"begin after end"}},
      {"out of bounds", make_file(one(entry("\"F32\"", "[2]", "[0,8]")), 4), {"run past the end of the 4-byte data buffer"}},
      {"overlap", make_file(R"({"a":)" + entry("\"F32\"", "[2]", "[0,8]") + R"(,"b":)" + entry("\"F32\"", "[2]", "[4,12]") + "}", 12),
       {"tensor \"b\" bytes [4, 12) overlap tensor \"a\""}},
      {"gap", make_file(R"({"a":)" + entry("\"F32\"", "[1]", "[0,4]") + R"(,"b":)" + entry("\"F32\"", "[1]", "[8,12]") + "}", 12),
       {"data bytes [4, 8) before tensor \"b\" belong to no tensor"}},
      {"trailing bytes", make_file(one(entry("\"F32\"", "[1]", "[0,4]")), 6), {"6 bytes", "cover only 4", "trailing"}},
      {"metadata not object", make_file(R"({"__metadata__":[1]})", 0), {"\"__metadata__\" is [1]"}},
      {"metadata value not string", make_file(R"({"__metadata__":{"step":3}})", 0), {"\"__metadata__\" key \"step\" is 3"}},
      {"duplicate tensor", make_file(R"({"w":)" + entry("\"F32\"", "[1]", "[0,4]") + R"(,"w":)" + entry("\"F32\"", "[1]", "[4,8]") + "}", 8),
       {"key \"w\" twice"}},
      {"deep nesting", make_file(nested, 0), {"nests deeper than"}},
  };
}

TEST(Safetensors, MalformedFilesAreRejectedWithClearMessages) {
  for (const BadCase& c : bad_cases()) {
    SCOPED_TRACE(c.what);
    try {
      parse_safetensors(c.bytes, "bad.safetensors");
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_EQ(msg.rfind("[safetensors] bad.safetensors: ", 0), 0u) << msg;
      for (const auto& s : c.expect) EXPECT_NE(msg.find(s), std::string::npos) << "missing '" << s << "' in: " << msg;
    }
  }
}

TEST_F(TempDir, MalformedFilesOnDiskNameThePath) {
  const std::string p = file("bad.safetensors");
  write_file_atomic(p, make_file(one(entry("\"Q4\"", "[1]", "[0,1]")), 1));
  try {
    load_safetensors(p);
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(p + ": tensor \"w\": \"dtype\" is \"Q4\""), std::string::npos) << e.what();
  }
  EXPECT_THROW(
      {
        try {
          load_safetensors(file("missing.safetensors"));
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find(file("missing.safetensors")), std::string::npos);
          EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos) << e.what();
          throw;
        }
      },
      Error);
  try {
    load_safetensors(dir_);
    FAIL() << "accepted a directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected a regular file, found a directory"), std::string::npos) << e.what();
  }
}

TEST(Safetensors, MissingTensorNamesFileAndTensor) {
  std::ostringstream os;
  write_safetensors(os, sample_tensors());
  SafetensorsFile f = parse_safetensors(os.str(), "m.safetensors");
  try {
    f.at("lm_head.weight");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("m.safetensors: no tensor named \"lm_head.weight\""), std::string::npos) << e.what();
  }
}

TEST_F(TempDir, WriterRejectsBadInputAndKeepsTheOldFile) {
  const std::string p = file("w.safetensors");
  save_safetensors(p, {{"a", Tensor::zeros({2})}});
  const std::string old = read_file(p);
  const std::vector<std::pair<NamedTensors, std::string>> bad = {
      {{{"a", Tensor::zeros({1})}, {"a", Tensor::zeros({1})}}, "two tensors named \"a\""},
      {{{"__metadata__", Tensor::zeros({1})}}, "reserves that key"},
      {{{"a", Tensor::zeros({1})}, {"u", Tensor()}}, "tensor \"u\": it is undefined"},
  };
  for (const auto& [ts, expect] : bad) {
    try {
      save_safetensors(p, ts);
      ADD_FAILURE() << "accepted: " << expect;
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(p + ": cannot save"), std::string::npos) << msg;
      EXPECT_NE(msg.find(expect), std::string::npos) << msg;
    }
  }
  EXPECT_EQ(read_file(p), old);
  EXPECT_EQ(listing(), std::vector<std::string>{"w.safetensors"});
}

// Valid file used by the fuzz tests: several dtypes, metadata, an empty and a 0-d tensor.
std::string fuzz_seed() {
  std::ostringstream os;
  write_safetensors(os, sample_tensors(), kMeta);
  return os.str();
}

// Loading either succeeds with tensors that fit in the input, or throws sw::Error; anything else
// (a crash, an ASan report, another exception type) fails the test. Returns how it ended.
enum class Outcome { loaded, bad_json, rejected };
Outcome load_or_error(const std::string& bytes, const std::string& what) {
  try {
    SafetensorsFile f = parse_safetensors(bytes, "fuzz");
    size_t total = 0;
    for (const auto& [n, t] : f.tensors) total += t.nbytes();
    EXPECT_LE(total, bytes.size()) << what;
    return Outcome::loaded;
  } catch (const Error& e) {
    return std::string(e.what()).find("not valid JSON") != std::string::npos ? Outcome::bad_json : Outcome::rejected;
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": non-sw::Error exception: " << e.what();
  }
  return Outcome::rejected;
}

TEST(Safetensors, EveryTruncationIsRejected) {
  const std::string seed = fuzz_seed();
  ASSERT_NO_THROW(parse_safetensors(seed, "seed"));
  // Tensors must tile the buffer to the end, so no proper prefix of a valid file is valid.
  for (size_t len = 0; len < seed.size(); ++len)
    EXPECT_THROW(parse_safetensors(seed.substr(0, len), "fuzz"), Error) << "prefix of " << len << " bytes";
}

TEST(Safetensors, RandomCorruptionNeverCrashes) {
  const std::string seed = fuzz_seed();
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(seed[i]);
  std::mt19937_64 rng(7);
  const std::string digits = "0123456789-.e";
  int counts[3] = {0, 0, 0};
  for (int iter = 0; iter < 4000; ++iter) {
    std::string b = seed;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      if (iter % 2 == 0) {  // any byte anywhere, any value
        b[rng() % b.size()] = static_cast<char>(rng());
      } else {  // a number in the header: keeps the JSON parseable more often, so shapes/offsets get tested
        size_t pos = 8 + rng() % n;
        while (pos < 8 + n && !std::isdigit(static_cast<unsigned char>(b[pos]))) ++pos;
        if (pos < 8 + n) b[pos] = digits[rng() % digits.size()];
      }
    }
    if (iter % 5 == 0) b.resize(rng() % (b.size() + 1));
    ++counts[static_cast<int>(load_or_error(b, "iteration " + std::to_string(iter)))];
  }
  // The loop must reach past the JSON parser into the field and layout checks, or it tests little.
  EXPECT_GT(counts[static_cast<int>(Outcome::rejected)], 400) << "loaded " << counts[0] << ", bad JSON " << counts[1];
  EXPECT_GT(counts[static_cast<int>(Outcome::loaded)], 0) << "some flips (e.g. inside float data) are harmless";
}

TEST_F(TempDir, AtomicWriteReplacesAndLeavesNoTemp) {
  const std::string p = file("f.bin");
  write_file_atomic(p, std::string("first"));
  EXPECT_EQ(read_file(p), "first");
  write_file_atomic(p, [](std::ostream& os) { os << "second, longer content"; });
  EXPECT_EQ(read_file(p), "second, longer content");
  write_file_atomic(p, std::string());
  EXPECT_EQ(read_file(p), "");
  EXPECT_EQ(listing(), std::vector<std::string>{"f.bin"});
}

TEST_F(TempDir, ThrowingWriterLeavesOldFileAndNoTemp) {
  const std::string p = file("ckpt.safetensors");
  save_safetensors(p, sample_tensors(), kMeta);
  const std::string old = read_file(p);
  struct Boom {};
  EXPECT_THROW(write_file_atomic(p,
                                 [](std::ostream& os) {
                                   // Past the stream's 64 KiB buffer, so bytes really reached the temp file.
                                   os << std::string(200000, 'x');
                                   throw Boom{};
                                 }),
               Boom);
  EXPECT_EQ(read_file(p), old);
  EXPECT_EQ(listing(), std::vector<std::string>{"ckpt.safetensors"});
  EXPECT_NO_THROW(load_safetensors(p));
}

TEST_F(TempDir, StaleTempFileIsReplacedAndRemoved) {
  const std::string p = file("f.bin");
  write_file_atomic(p + ".tmp." + std::to_string(::getpid()), std::string("stale leftover from a crash"));
  write_file_atomic(p, std::string("new"));
  EXPECT_EQ(read_file(p), "new");
  EXPECT_EQ(listing(), std::vector<std::string>{"f.bin"});
}

TEST_F(TempDir, OsFailuresNameThePathAndReason) {
  const std::string p = file("no_such_dir/f.bin");
  try {
    write_file_atomic(p, std::string("x"));
    FAIL();
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.rfind("[io] cannot write " + p, 0), 0u) << msg;
    EXPECT_NE(msg.find("No such file or directory"), std::string::npos) << msg;
  }
  try {
    save_safetensors(dir_, sample_tensors());  // renaming a file over a directory fails
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot write " + dir_), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir_ + ".tmp." + std::to_string(::getpid()))) << "temp file left behind";
  EXPECT_TRUE(fs::is_directory(dir_));
  try {
    read_file(file("absent"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open " + file("absent") + ": No such file"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sw::io
