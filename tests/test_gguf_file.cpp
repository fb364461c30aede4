// The GGUF reader and writer: every metadata value type round-trips, llama.cpp's own files read
// with the same weights as the safetensors they came from, and a corpus of malformed files
// (every truncation, bad counts, offsets, types, alignments, 400 random corruptions) gives clear
// errors naming the file and the field.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "gguf_tiny_model.h"
#include "support/test_support.h"
#include "trainer/io/gguf_file.h"
#include "trainer/io/safetensors.h"

namespace lora {
namespace {

using test::TempDir;

std::vector<std::byte> f32_bytes(std::initializer_list<float> v) {
  std::vector<std::byte> b(v.size() * 4);
  std::memcpy(b.data(), std::data(v), b.size());
  return b;
}

// A small file with metadata of every type and three tensors (F32, Q8_0, F16).
GgufWriter small_writer() {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  GgufValue v;
  const std::pair<GgufType, int64_t> ints[] = {{GgufType::U8, 200},
                                               {GgufType::I8, -100},
                                               {GgufType::U16, 60000},
                                               {GgufType::I16, -30000},
                                               {GgufType::U32, 4000000000},
                                               {GgufType::I32, -2000000000},
                                               {GgufType::U64, int64_t(1) << 40},
                                               {GgufType::I64, -(int64_t(1) << 40)}};
  for (const auto& [type, value] : ints) {
    v = {};
    v.type = type;
    v.integer = value;
    w.set("test." + std::string(gguf_type_name(type)), v);
  }
  w.set_f32("test.f32", 0.25f);
  v = {};
  v.type = GgufType::F64;
  v.real = 1e-300;
  w.set("test.f64", v);
  w.set_bool("test.bool", true);
  w.set_strings("test.strings", {"a", "", "\xe2\x96\x81hello"});
  const float reals[] = {1.5f, -2.0f};
  w.set_f32s("test.reals", reals);
  const int32_t ids[] = {1, -1, 7};
  w.set_i32s("test.ints", ids);
  w.add_tensor("a.weight", GgmlType::F32, {2, 3}, f32_bytes({1, 2, 3, 4, 5, 6}));
  std::vector<float> q(64);
  for (int i = 0; i < 64; ++i) q[i] = float(i - 32) / 8.0f;
  std::vector<std::byte> qb(ggml_row_bytes(GgmlType::Q8_0, 32) * 2);
  ggml_quantize_row(GgmlType::Q8_0, q.data(), 64, qb.data());
  w.add_tensor("b.weight", GgmlType::Q8_0, {2, 32}, std::move(qb));
  std::vector<std::byte> hb(2 * 4);
  ggml_quantize_row(GgmlType::F16, q.data(), 4, hb.data());
  w.add_tensor("c.bias", GgmlType::F16, {4}, std::move(hb));
  return w;
}

std::string open_error(const std::filesystem::path& path) {
  try {
    GgufFile::open(path);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

std::string error_of(const TempDir& dir, const std::vector<std::byte>& bytes) {
  const auto path = dir / "bad.gguf";
  test::write_file(path, std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  return open_error(path);
}

std::size_t after(const std::vector<std::byte>& b, const std::string& text) {
  const std::size_t at = test::gguf_after(b, text);
  EXPECT_NE(at, b.size()) << text;
  return at;
}

using test::gguf_poke;

TEST(GgufFile, EveryValueTypeRoundTrips) {
  TempDir dir("gguf");
  small_writer().write(dir / "m.gguf");
  const GgufFile f = GgufFile::open(dir / "m.gguf");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset() % 32, 0u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("test.u8"), 200);
  EXPECT_EQ(f.get_int("test.i8"), -100);
  EXPECT_EQ(f.get_int("test.u16"), 60000);
  EXPECT_EQ(f.get_int("test.i16"), -30000);
  EXPECT_EQ(f.get_int("test.u32"), 4000000000);
  EXPECT_EQ(f.get_int("test.i32"), -2000000000);
  EXPECT_EQ(f.get_int("test.u64"), int64_t(1) << 40);
  EXPECT_EQ(f.get_int("test.i64"), -(int64_t(1) << 40));
  EXPECT_EQ(f.get_real("test.f32"), 0.25);
  EXPECT_EQ(f.get_real("test.f64"), 1e-300);
  EXPECT_EQ(f.get_real("test.u8"), 200.0);
  EXPECT_TRUE(f.get_bool("test.bool"));
  EXPECT_EQ(f.find("test.strings")->strings,
            (std::vector<std::string>{"a", "", "\xe2\x96\x81hello"}));
  EXPECT_EQ(f.find("test.reals")->reals, (std::vector<double>{1.5, -2.0}));
  EXPECT_EQ(f.find("test.ints")->integers, (std::vector<int64_t>{1, -1, 7}));
  EXPECT_EQ(f.find("test.ints")->element_type, GgufType::I32);
  EXPECT_EQ(f.metadata_order().front(), "general.architecture");
  EXPECT_EQ(f.int_or("missing"), std::nullopt);
  try {
    f.get_int("general.architecture");
    ADD_FAILURE() << "a string read as an integer";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("'general.architecture' is string, expected an integer"),
              std::string::npos)
        << e.what();
  }
  ASSERT_EQ(f.tensors().size(), 3u);
  const auto& a = f.tensor("a.weight");
  EXPECT_EQ(a.shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.rows(), 2);
  EXPECT_EQ(a.cols(), 3);
  EXPECT_EQ(f.read_f32("a.weight"), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  const auto b = f.read_f32("b.weight");
  for (int i = 0; i < 64; ++i) EXPECT_NEAR(b[i], float(i - 32) / 8.0f, 0.02f);
  EXPECT_EQ(f.read_f32("c.bias"), (std::vector<float>{-4.0f, -3.875f, -3.75f, -3.625f}));
  for (const auto& t : f.tensors()) EXPECT_EQ(t.offset % 32, 0u) << t.name;
  EXPECT_NE(open_error(dir / "none.gguf").find("none.gguf: cannot open"), std::string::npos);
}

TEST(GgufFile, LlamaCppConverterFilesHoldTheSafetensorsWeights) {
  LORA_REQUIRE_SHARED("models/stories260K-gguf/stories260K-f32.gguf");
  const auto dir = test::shared_dir() / "models";
  const auto st = SafetensorsFile::open(dir / "stories260K" / "model.safetensors");
  for (const char* name : {"f32", "f16", "q8_0"}) {
    const auto f =
        GgufFile::open(dir / "stories260K-gguf" / ("stories260K-" + std::string(name) + ".gguf"));
    EXPECT_EQ(f.get_string("general.architecture"), "llama");
    EXPECT_EQ(f.get_int("llama.block_count"), 5);
    EXPECT_EQ(f.get_int("llama.embedding_length"), 64);
    EXPECT_EQ(f.get_int("llama.attention.head_count_kv"), 4);
    EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "llama");
    EXPECT_EQ(f.find("tokenizer.ggml.tokens")->strings.size(), 512u);
    EXPECT_EQ(f.find("tokenizer.ggml.scores")->reals.size(), 512u);
    // token_embd is not permuted: the same values as the HF tensor (up to the file's type).
    const auto& info = f.tensor("token_embd.weight");
    EXPECT_EQ(info.shape(), (std::vector<int64_t>{512, 64}));
    const auto got = f.read_f32("token_embd.weight");
    const auto want = st.read_f32("model.embed_tokens.weight");
    ASSERT_EQ(got.size(), want.size());
    float err = 0;
    for (std::size_t i = 0; i < got.size(); ++i) err = std::max(err, std::abs(got[i] - want[i]));
    const float tol = std::string(name) == "f32"   ? 0.0f
                      : std::string(name) == "f16" ? 1e-3f
                                                   : 2e-2f;
    EXPECT_LE(err, tol) << name << " " << ggml_type_name(info.type);
  }
}

TEST(GgufFile, EveryTruncationIsAClearError) {
  TempDir dir("gguf");
  const auto good = small_writer().serialize();
  // The last tensor's end: cutting anywhere before it loses something the file promised.
  test::write_file(dir / "good.gguf",
                   std::string(reinterpret_cast<const char*>(good.data()), good.size()));
  const auto f = GgufFile::open(dir / "good.gguf");
  uint64_t end = 0;
  for (const auto& t : f.tensors()) end = std::max(end, f.data_offset() + t.offset + t.bytes);
  for (std::size_t len = 0; len < end; ++len) {
    const std::string err = error_of(dir, {good.begin(), good.begin() + static_cast<long>(len)});
    ASSERT_FALSE(err.empty()) << "truncated to " << len << " bytes opened";
    ASSERT_NE(err.find("bad.gguf: "), std::string::npos) << err;
    if (len >= 24) {
      const bool named = err.find("truncated") != std::string::npos ||
                         err.find("past") != std::string::npos ||
                         err.find("more than the") != std::string::npos;
      ASSERT_TRUE(named) << len << ": " << err;
    }
  }
}

TEST(GgufFile, BadHeadersCountsTypesAndOffsets) {
  TempDir dir("gguf");
  const auto good = small_writer().serialize();
  auto expect_error = [&](std::vector<std::byte> b, const std::string& want) {
    const std::string err = error_of(dir, b);
    EXPECT_NE(err.find(want), std::string::npos)
        << "want \"" << want << "\", got \"" << err << "\"";
  };
  auto b = good;
  b[0] = std::byte{'X'};
  expect_error(b, "no \"GGUF\" magic");
  b = good;
  gguf_poke<uint32_t>(b, 4, 1);
  expect_error(b, "version 1 is not supported");
  gguf_poke<uint32_t>(b, 4, 3u << 24);
  expect_error(b, "big-endian");
  b = good;
  gguf_poke<uint64_t>(b, 8, uint64_t(1) << 60);
  expect_error(b, "tensor count 1152921504606846976 is more than");
  b = good;
  gguf_poke<uint64_t>(b, 16, ~uint64_t(0));
  expect_error(b, "metadata count");
  b = good;
  gguf_poke<uint64_t>(b, 24, uint64_t(1) << 40);  // the first key's length
  expect_error(b, "string length 1099511627776 runs past the end");
  b = good;
  gguf_poke<uint64_t>(b, after(b, "test.strings") + 8, uint64_t(1) << 50);
  expect_error(b, "metadata 'test.strings' (array length)");
  b = good;
  gguf_poke<uint32_t>(b, after(b, "test.f32"), 13);
  expect_error(b, "metadata 'test.f32': unknown value type 13");
  b = good;
  gguf_poke<uint32_t>(b, after(b, "test.reals") + 4, 9);
  expect_error(b, "arrays of arrays");
  b = good;
  gguf_poke<uint8_t>(b, after(b, "test.bool") + 4, 7);
  expect_error(b, "bool value 7");
  b = good;
  gguf_poke<uint64_t>(b, after(b, "test.u64") + 4, ~uint64_t(0));
  expect_error(b, "u64 value 18446744073709551615 is out of range");

  // Tensor infos: name, n_dims, ne[], type, offset.
  const std::size_t a = after(good, "a.weight");
  b = good;
  gguf_poke<uint32_t>(b, a, 5);
  expect_error(b, "tensor 'a.weight': n_dims 5 is not between 1 and 4");
  b = good;
  gguf_poke<uint64_t>(b, a + 4, uint64_t(1) << 40);
  expect_error(b, "tensor 'a.weight': dimension 0 = 1099511627776 is absurdly large");
  b = good;
  gguf_poke<uint32_t>(b, a + 20, 9);
  expect_error(b, "tensor 'a.weight': tensor type Q8_1 (9) is not supported");
  gguf_poke<uint32_t>(b, a + 20, 4000);
  expect_error(b, "tensor 'a.weight': tensor type type 4000 (4000) is not supported");
  b = good;
  gguf_poke<uint32_t>(b, a + 20, static_cast<uint32_t>(GgmlType::Q4_0));
  expect_error(b, "row length 3 is not a multiple of the Q4_0 block size 32");
  b = good;
  gguf_poke<uint64_t>(b, a + 24, 8);
  expect_error(b, "tensor 'a.weight': offset 8 is not a multiple of the alignment 32");
  gguf_poke<uint64_t>(b, a + 24, uint64_t(1) << 20);
  expect_error(b, "tensor 'a.weight': bytes [1048576, 1048600) run past the data section");
  b = good;
  const std::size_t c = after(good, "c.bias");
  gguf_poke<uint64_t>(b, c + 16, 0);  // onto a.weight
  expect_error(b, "overlaps");

  GgufWriter dup = small_writer();
  dup.add_tensor("a.weight", GgmlType::F32, {1}, f32_bytes({1}));
  expect_error(dup.serialize(), "tensor 'a.weight' appears twice");
  GgufWriter aligned(16);
  aligned.set_string("x", "y");
  auto ab = aligned.serialize();
  EXPECT_EQ(error_of(dir, ab), "");
  gguf_poke<uint32_t>(ab, after(ab, "general.alignment") + 4, 3);
  expect_error(ab, "'general.alignment' must be a u32 power of two, got u32 3");
}

// Random byte corruptions anywhere in the file: each one opens cleanly or throws a runtime_error
// naming the file; a file that opens has every tensor readable (values may be garbage).
TEST(GgufFile, RandomCorruptionsNeverCrash) {
  TempDir dir("gguf");
  const auto good = small_writer().serialize();
  std::mt19937 rng(2024);
  int refused = 0;
  for (int trial = 0; trial < 400; ++trial) {
    auto b = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < flips; ++i) {
      // Most of the interesting structure is in the header: aim there three times in four.
      const std::size_t limit = rng() % 4 ? std::min<std::size_t>(b.size(), 400) : b.size();
      b[rng() % limit] = static_cast<std::byte>(rng() & 0xFF);
    }
    const auto path = dir / "fuzz.gguf";
    test::write_file(path, std::string(reinterpret_cast<const char*>(b.data()), b.size()));
    try {
      const auto f = GgufFile::open(path);
      for (const auto& t : f.tensors()) (void)f.read_f32(t.name);
    } catch (const std::runtime_error& e) {
      ++refused;
      ASSERT_NE(std::string(e.what()).find("fuzz.gguf: "), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(refused, 100);  // the corruptions do hit structure
}

}  // namespace
}  // namespace lora
