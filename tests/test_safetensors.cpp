// safetensors: round trips, sharded folders, and a corpus of malformed files that must each be a
// clear error naming the file (and the tensor), never a crash.
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <random>

#include "tests/support/test_support.h"
#include "trainer/io/safetensors.h"

namespace lora {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// Raw file: u64 LE header length (or `length_override`), the header text, then `data_bytes` bytes.
void write_raw(const fs::path& p, const std::string& header, std::size_t data_bytes,
               std::optional<uint64_t> length_override = std::nullopt) {
  std::string out(8, '\0');
  const uint64_t n = length_override.value_or(header.size());
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += header;
  out.append(data_bytes, '\x01');
  test::write_file(p, out);
}

// Opening must fail with a runtime_error whose message contains every one of `needles`.
void expect_error(const fs::path& p, std::initializer_list<std::string> needles) {
  try {
    SafetensorsFile::open(p);
    ADD_FAILURE() << "opened " << p << " without error";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(p.filename().string()), std::string::npos) << msg;
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << msg;
  }
}

std::vector<TensorData> sample_tensors() {
  std::vector<TensorData> ts;
  ts.push_back(TensorData::from_f32("b.weight", {2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6}));
  ts.push_back(TensorData::convert("a.bf16", DType::BF16, {3}, std::vector<float>{0.5f, -2, 3}));
  ts.push_back(TensorData::convert("c.f16", DType::F16, {2}, std::vector<float>{0.25f, 65504}));
  TensorData ints{"d.u32", DType::U32, {2}, std::vector<std::byte>(8)};
  ints.bytes[0] = std::byte{7};
  ints.bytes[4] = std::byte{9};
  ts.push_back(ints);
  ts.push_back(TensorData{"e.empty", DType::I64, {0, 4}, {}});
  return ts;
}

TEST(Safetensors, WriteThenReadRoundTrips) {
  TempDir dir("st");
  const auto p = dir / "x.safetensors";
  write_safetensors(p, sample_tensors(), {{"format", "pt"}, {"note", "hi"}});
  auto f = SafetensorsFile::open(p);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "hi");
  ASSERT_EQ(f.tensors().size(), 5u);
  // Written in name order, so file order is sorted.
  EXPECT_EQ(f.tensors()[0].name, "a.bf16");
  EXPECT_EQ(f.read_f32("b.weight"), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(f.read_f32("a.bf16"), (std::vector<float>{0.5f, -2, 3}));
  EXPECT_EQ(f.read_f32("c.f16"), (std::vector<float>{0.25f, 65504}));
  EXPECT_EQ(f.info("b.weight").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f.info("d.u32").dtype, DType::U32);
  uint32_t second;
  std::memcpy(&second, f.bytes("d.u32").data() + 4, 4);
  EXPECT_EQ(second, 9u);
  EXPECT_EQ(f.info("e.empty").numel(), 0);
  EXPECT_THROW(f.read_f32("d.u32"), std::runtime_error);  // not a float
  EXPECT_THROW(f.info("missing"), std::runtime_error);

  // Layout: header length a multiple of 8, padded with spaces.
  const std::string raw = test::read_file(p);
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(raw[8], '{');
  EXPECT_EQ(raw[8 + n - 1] == ' ' || raw[8 + n - 1] == '}', true);
}

TEST(Safetensors, EveryDtypeIsAccepted) {
  TempDir dir("st");
  std::vector<TensorData> ts;
  for (auto name : {"F32", "F16", "BF16", "F64", "I8", "U8", "I16", "I32", "U32", "I64", "BOOL"}) {
    DType t = *dtype_from_name(name);
    ts.push_back(
        TensorData{std::string("t_") + name, t, {3}, std::vector<std::byte>(3 * dtype_size(t))});
  }
  write_safetensors(dir / "all.safetensors", ts);
  auto f = SafetensorsFile::open(dir / "all.safetensors");
  EXPECT_EQ(f.tensors().size(), 11u);
  EXPECT_EQ(f.info("t_BOOL").dtype, DType::BOOL);
  EXPECT_EQ(f.read_f32("t_F64"), std::vector<float>(3, 0.0f));
}

TEST(Safetensors, WriteRejectsBadTensors) {
  TempDir dir("st");
  EXPECT_THROW(write_safetensors(dir / "a.safetensors",
                                 {TensorData{"x", DType::F32, {2}, std::vector<std::byte>(7)}}),
               std::invalid_argument);
  auto t = TensorData::from_f32("x", {1}, std::vector<float>{1});
  EXPECT_THROW(write_safetensors(dir / "a.safetensors", {t, t}), std::invalid_argument);
  EXPECT_FALSE(fs::exists(dir / "a.safetensors"));
}

TEST(Safetensors, MisalignedTensorsStillRead) {
  // A 2-byte-aligned header puts the data section at an odd-ish offset; reading must not rely on
  // alignment (UBSan would catch it).
  TempDir dir("st");
  float v = 1.5f;
  std::string header =
      R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}})";
  std::string out(8, '\0');
  out[0] = static_cast<char>(header.size());
  out += header;
  out += '\x00';
  out.append(reinterpret_cast<const char*>(&v), 4);
  test::write_file(dir / "m.safetensors", out);
  auto f = SafetensorsFile::open(dir / "m.safetensors");
  EXPECT_EQ(f.read_f32("b"), std::vector<float>{1.5f});
}

// ---- the malformed corpus ----

TEST(SafetensorsMalformed, EveryTruncationIsAnError) {
  TempDir dir("st");
  const auto good = dir / "good.safetensors";
  write_safetensors(good, sample_tensors(), {{"format", "pt"}});
  const std::string raw = test::read_file(good);
  for (std::size_t len = 0; len < raw.size(); ++len) {
    const auto p = dir / "cut.safetensors";
    test::write_file(p, raw.substr(0, len));
    // A cut inside trailing zero-size data could still be valid; here the last tensor has bytes.
    EXPECT_THROW(SafetensorsFile::open(p), std::runtime_error) << "length " << len;
  }
  expect_error(dir / "cut.safetensors", {"truncated"});
}

TEST(SafetensorsMalformed, OverlappingTensors) {
  TempDir dir("st");
  const auto p = dir / "overlap.safetensors";
  write_raw(
      p,
      R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
      24);
  expect_error(p, {"'b'", "overlap", "'a'"});
}

TEST(SafetensorsMalformed, OffsetsOutOfRange) {
  TempDir dir("st");
  const auto p = dir / "range.safetensors";
  write_raw(p, R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}})", 20);
  expect_error(p, {"'w'", "past the data section"});
  write_raw(
      p,
      R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551616]}})",
      4);
  expect_error(p, {});
  write_raw(p, R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8);
  expect_error(p, {"'w'", "end before"});
}

TEST(SafetensorsMalformed, HugeOrImpossibleHeaderLength) {
  TempDir dir("st");
  const auto p = dir / "huge.safetensors";
  write_raw(p, "{}", 0, uint64_t(1) << 62);
  expect_error(p, {"header length", "limit"});
  write_raw(p, "{}", 0, 50'000'000);  // under the limit but past the end of the file
  expect_error(p, {"past the end"});
  write_raw(p, "{}", 0, ~uint64_t(0));
  expect_error(p, {"header length"});
  write_raw(p, "", 0, 0);
  expect_error(p, {"empty"});
}

TEST(SafetensorsMalformed, BadDtype) {
  TempDir dir("st");
  const auto p = dir / "dtype.safetensors";
  write_raw(p, R"({"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", 4);
  expect_error(p, {"'w'", "F8_E4M3"});
  write_raw(p, R"({"w":{"dtype":7,"shape":[4],"data_offsets":[0,4]}})", 4);
  expect_error(p, {"'w'", "dtype"});
}

TEST(SafetensorsMalformed, WrongByteSizeForShape) {
  TempDir dir("st");
  const auto p = dir / "size.safetensors";
  write_raw(p, R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", 12);
  expect_error(p, {"'w'", "12 bytes", "[2, 2]", "16"});
  // A shape whose byte count overflows 64 bits.
  write_raw(p, R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0);
  expect_error(p, {"'w'", "overflow"});
}

TEST(SafetensorsMalformed, BadShapesAndOffsets) {
  TempDir dir("st");
  const auto p = dir / "shape.safetensors";
  for (const char* header : {
           R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
           R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})",
           R"({"w":{"dtype":"F32","shape":"4","data_offsets":[0,4]}})",
           R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})",
           R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})",
           R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})",
           R"({"w":{"dtype":"F32","shape":[1]}})",
           R"({"w":[1,2,3]})",
       }) {
    write_raw(p, header, 8);
    SCOPED_TRACE(header);
    expect_error(p, {"'w'"});
  }
}

TEST(SafetensorsMalformed, HeaderNotAJsonObject) {
  TempDir dir("st");
  const auto p = dir / "json.safetensors";
  for (const char* header : {"[1,2,3]", "\"text\"", "null", "42"}) {
    write_raw(p, header, 0);
    SCOPED_TRACE(header);
    expect_error(p, {"not a JSON object"});
  }
  for (const char* header : {"{\"w\": ", "{\"a\":1,}", "\xff\xfe{}", "{} trailing"}) {
    write_raw(p, header, 0);
    SCOPED_TRACE(header);
    expect_error(p, {"JSON"});
  }
}

TEST(SafetensorsMalformed, MetadataMustBeAStringMap) {
  TempDir dir("st");
  const auto p = dir / "meta.safetensors";
  write_raw(p, R"({"__metadata__":{"format":1}})", 0);
  expect_error(p, {"__metadata__", "format"});
  write_raw(p, R"({"__metadata__":["format"]})", 0);
  expect_error(p, {"__metadata__"});
  write_raw(p, R"({"__metadata__":null})", 0);  // legal: MLX writes it when there is no metadata
  EXPECT_TRUE(SafetensorsFile::open(p).metadata().empty());
}

TEST(SafetensorsMalformed, RandomCorruptionNeverCrashes) {
  TempDir dir("st");
  const auto good = dir / "good.safetensors";
  write_safetensors(good, sample_tensors(), {{"format", "pt"}});
  const std::string raw = test::read_file(good);
  std::mt19937 rng(1234);
  int opened = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::string bad = raw;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < flips; ++k) {
      // Mostly the length and the header, where the parsing is.
      const std::size_t at = rng() % std::min<std::size_t>(bad.size(), 8 + 400);
      bad[at] = static_cast<char>(rng() & 0xff);
    }
    const auto p = dir / "fuzz.safetensors";
    test::write_file(p, bad);
    try {
      auto f = SafetensorsFile::open(p);
      for (const auto& t : f.tensors()) {
        auto bytes = f.bytes(t.name);
        ASSERT_EQ(bytes.size(), t.end - t.begin);
        if (t.dtype == DType::F32 || t.dtype == DType::BF16 || t.dtype == DType::F16)
          (void)f.read_f32(t.name);
      }
      ++opened;
    } catch (const std::runtime_error&) {
    }
  }
  EXPECT_LT(opened, 400);
}

TEST(SafetensorsMalformed, PickleIsRefused) {
  TempDir dir("st");
  for (const char* name : {"pytorch_model.bin", "x.pt", "x.pth", "x.ckpt"}) {
    test::write_file(dir / name, "not really pickle");
    try {
      SafetensorsFile::open(dir / name);
      ADD_FAILURE() << name;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("pickle"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
  // A folder with only a pickle checkpoint says why it is not read.
  try {
    WeightSet::open_dir(dir.path());
    ADD_FAILURE();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("pickle"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(refuse_pickle("model.safetensors"));
}

// ---- sharded folders ----

void write_index(const fs::path& dir, const nlohmann::json& weight_map) {
  test::write_file(
      dir / "model.safetensors.index.json",
      nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump());
}

TEST(WeightSet, ShardedFolderLooksUpAcrossShards) {
  TempDir dir("st");
  write_safetensors(dir / "model-00001-of-00002.safetensors",
                    {TensorData::from_f32("a", {1}, std::vector<float>{1})});
  write_safetensors(dir / "model-00002-of-00002.safetensors",
                    {TensorData::from_f32("b", {2}, std::vector<float>{2, 3})});
  write_index(dir.path(), {{"a", "model-00001-of-00002.safetensors"},
                           {"b", "model-00002-of-00002.safetensors"}});
  auto ws = WeightSet::open_dir(dir.path());
  EXPECT_EQ(ws.files().size(), 2u);
  EXPECT_EQ(ws.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(ws.read_f32("b"), (std::vector<float>{2, 3}));
  EXPECT_EQ(ws.info("a").shape, std::vector<int64_t>{1});
  EXPECT_FALSE(ws.contains("c"));
  EXPECT_THROW(ws.read_f32("c"), std::runtime_error);
}

TEST(WeightSet, SingleFileFolder) {
  TempDir dir("st");
  write_safetensors(dir / "model.safetensors", sample_tensors());
  auto ws = WeightSet::open_dir(dir.path());
  EXPECT_EQ(ws.names().size(), 5u);
  EXPECT_TRUE(ws.contains("b.weight"));
  TempDir empty("st");
  EXPECT_THROW(WeightSet::open_dir(empty.path()), std::runtime_error);
}

TEST(WeightSet, ShardPathsMustStayInsideTheFolder) {
  TempDir outer("st");
  const auto dir = outer / "model";
  fs::create_directories(dir);
  write_safetensors(outer / "evil.safetensors",
                    {TensorData::from_f32("a", {1}, std::vector<float>{1})});
  fs::create_symlink(outer / "evil.safetensors", dir / "link.safetensors");
  for (const std::string& shard : std::vector<std::string>{
           "../evil.safetensors", (outer / "evil.safetensors").string(),
           std::string("sub/../../evil.safetensors"), std::string("link.safetensors"),
           std::string(""), std::string(".")}) {
    write_index(dir, {{"a", shard}});
    SCOPED_TRACE(shard);
    try {
      WeightSet::open_dir(dir);
      ADD_FAILURE() << "accepted shard " << shard;
    } catch (const std::runtime_error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("model.safetensors.index.json"), std::string::npos) << msg;
      EXPECT_NE(msg.find("model folder"), std::string::npos) << msg;
    }
  }
}

TEST(WeightSet, BadIndexes) {
  TempDir dir("st");
  write_safetensors(dir / "s1.safetensors",
                    {TensorData::from_f32("a", {1}, std::vector<float>{1})});
  write_index(dir.path(), {{"zzz", "s1.safetensors"}});
  EXPECT_THROW(WeightSet::open_dir(dir.path()), std::runtime_error);  // shard lacks the tensor
  write_index(dir.path(), {{"a", 3}});
  EXPECT_THROW(WeightSet::open_dir(dir.path()), std::runtime_error);
  test::write_file(dir / "model.safetensors.index.json", "{\"weight_map\": [");
  EXPECT_THROW(WeightSet::open_dir(dir.path()), std::runtime_error);
  write_index(dir.path(), {{"a", "missing.safetensors"}});
  EXPECT_THROW(WeightSet::open_dir(dir.path()), std::runtime_error);
}

TEST(Safetensors, ReadsStories260K) {
  LORA_REQUIRE_SHARED("models/stories260K/model.safetensors");
  auto f = SafetensorsFile::open(test::shared_dir() / "models/stories260K/model.safetensors");
  EXPECT_EQ(f.tensors().size(), 47u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.info("model.embed_tokens.weight").shape, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(f.info("model.layers.0.mlp.down_proj.weight").shape, (std::vector<int64_t>{64, 172}));
}

}  // namespace
}  // namespace lora
