// Adapter files without a base model: the real PEFT and MLX-LM adapters in ../shared/adapters
// are read with the right modules, ranks and scales, convert both ways with exactly the other
// ecosystem's names, shapes and config fields, and round-trip bit for bit; bad files fail clearly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <set>

#include "tests/adapter_test_util.h"
#include "tests/support/test_support.h"
#include "trainer/io/adapter_file.h"
#include "trainer/io/safetensors.h"

namespace lora {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::shared_dir;
using test::TempDir;

const char* kPeftQwen = "adapters/peft-qwen2.5-0.5b-instruct-r8-qv";
const char* kPeftGemma = "adapters/peft-gemma3-270m-r4-qkvo";
const char* kMlxQwen = "adapters/mlx-lm-qwen2.5-0.5b-instruct-r8-qv";

json read_json(const fs::path& p) { return json::parse(test::read_file(p)); }

std::set<std::string> tensor_names(const SafetensorsFile& f) {
  std::set<std::string> names;
  for (const auto& t : f.tensors()) names.insert(t.name);
  return names;
}

std::set<std::string> keys_of(const json& j) {
  std::set<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.insert(k);
  return keys;
}

// Every tensor of `a` is in `b` with the same dtype, shape and bytes, and vice versa.
void expect_same_tensors(const fs::path& a_path, const fs::path& b_path) {
  const auto a = SafetensorsFile::open(a_path);
  const auto b = SafetensorsFile::open(b_path);
  ASSERT_EQ(tensor_names(a), tensor_names(b));
  for (const auto& t : a.tensors()) {
    const auto& u = b.info(t.name);
    EXPECT_EQ(t.dtype, u.dtype) << t.name;
    EXPECT_EQ(t.shape, u.shape) << t.name;
    const auto x = a.bytes(t.name);
    const auto y = b.bytes(t.name);
    ASSERT_EQ(x.size(), y.size()) << t.name;
    EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size()), 0) << t.name << " differs";
  }
}

std::string layer_key(const char* prefix, int layer, const char* module, const char* suffix) {
  return std::string(prefix) + "model.layers." + std::to_string(layer) + ".self_attn." + module +
         suffix;
}

TEST(AdapterFile, ReadsRealPeftQwen) {
  LORA_REQUIRE_SHARED(kPeftQwen);
  const auto a = AdapterFile::read(shared_dir() / kPeftQwen);
  EXPECT_EQ(a.format, AdapterFormat::peft);
  ASSERT_EQ(a.pairs.size(), 48u);  // 24 layers x q, v
  EXPECT_EQ(a.common_rank(), 8);
  ASSERT_TRUE(a.common_scale());
  EXPECT_DOUBLE_EQ(*a.common_scale(), 2.0);  // lora_alpha 16 / r 8
  EXPECT_EQ(a.module_names(), (std::vector<std::string>{"self_attn.q_proj", "self_attn.v_proj"}));
  EXPECT_EQ(a.layers().front(), 0);
  EXPECT_EQ(a.layers().back(), 23);
  EXPECT_EQ(a.base_model, "Qwen/Qwen2.5-0.5B-Instruct");
  for (const auto& p : a.pairs) {
    EXPECT_EQ(p.in, 896);
    EXPECT_EQ(p.out, p.module == "self_attn.q_proj" ? 896 : 128);  // 2 kv heads x 64
  }
}

TEST(AdapterFile, ReadsRealPeftGemma) {
  LORA_REQUIRE_SHARED(kPeftGemma);
  const auto a = AdapterFile::read(shared_dir() / kPeftGemma);
  EXPECT_EQ(a.format, AdapterFormat::peft);
  EXPECT_EQ(a.pairs.size(), 72u);  // 18 layers x q, k, v, o
  EXPECT_EQ(a.common_rank(), 4);
  EXPECT_DOUBLE_EQ(*a.common_scale(), 4.0);  // 16 / 4
  EXPECT_DOUBLE_EQ(a.dropout, 0.05);
  EXPECT_EQ(a.module_names().size(), 4u);
  for (const auto& p : a.pairs) {
    if (p.module == "self_attn.k_proj") {
      EXPECT_EQ(p.in, 640);
      EXPECT_EQ(p.out, 256);
    }
    if (p.module == "self_attn.o_proj") {
      EXPECT_EQ(p.in, 1024);
      EXPECT_EQ(p.out, 640);
    }
  }
}

TEST(AdapterFile, ReadsRealMlxAndTransposesToPeftOrientation) {
  LORA_REQUIRE_SHARED(kMlxQwen);
  const fs::path dir = shared_dir() / kMlxQwen;
  const auto a = AdapterFile::read(dir);
  EXPECT_EQ(a.format, AdapterFormat::mlx);
  ASSERT_EQ(a.pairs.size(), 8u);  // last 4 layers x q, v
  EXPECT_EQ(a.layers(), (std::vector<int64_t>{20, 21, 22, 23}));
  EXPECT_EQ(a.common_rank(), 8);
  EXPECT_DOUBLE_EQ(*a.common_scale(), 10.0);  // lora_parameters.scale, not alpha / rank
  EXPECT_EQ(a.mlx_run_args.value("iters", 0), 1000);
  // A is [r, in] = lora_a^T, B is [out, r] = lora_b^T.
  const auto raw = SafetensorsFile::open(dir / "adapters.safetensors");
  const auto lora_a = raw.read_f32("model.layers.20.self_attn.v_proj.lora_a");  // [896, 8]
  const auto lora_b = raw.read_f32("model.layers.20.self_attn.v_proj.lora_b");  // [8, 128]
  const auto& v = a.pairs[1];
  ASSERT_EQ(v.module, "self_attn.v_proj");
  ASSERT_EQ(v.out, 128);
  for (int64_t r = 0; r < 8; ++r) {
    for (int64_t i = 0; i < 896; i += 97) EXPECT_EQ(v.a[r * 896 + i], lora_a[i * 8 + r]);
    for (int64_t o = 0; o < 128; o += 13) EXPECT_EQ(v.b[o * 8 + r], lora_b[r * 128 + o]);
  }
}

TEST(AdapterFile, MlxToPeftHasPeftNamesShapesAndConfig) {
  LORA_REQUIRE_SHARED(kMlxQwen);
  LORA_REQUIRE_SHARED(kPeftQwen);
  TempDir tmp("adapter");
  const auto mlx = AdapterFile::read(shared_dir() / kMlxQwen);
  mlx.write(tmp / "peft", AdapterFormat::peft);

  const auto st = SafetensorsFile::open(tmp / "peft" / "adapter_model.safetensors");
  EXPECT_EQ(st.metadata().at("format"), "pt");
  std::set<std::string> want;
  for (int layer = 20; layer < 24; ++layer)
    for (const char* m : {"q_proj", "v_proj"})
      for (const char* s : {".lora_A.weight", ".lora_B.weight"})
        want.insert(layer_key("base_model.model.", layer, m, s));
  EXPECT_EQ(tensor_names(st), want);
  EXPECT_EQ(st.info(layer_key("base_model.model.", 20, "q_proj", ".lora_A.weight")).shape,
            (std::vector<int64_t>{8, 896}));
  EXPECT_EQ(st.info(layer_key("base_model.model.", 20, "q_proj", ".lora_B.weight")).shape,
            (std::vector<int64_t>{896, 8}));
  EXPECT_EQ(st.info(layer_key("base_model.model.", 23, "v_proj", ".lora_B.weight")).shape,
            (std::vector<int64_t>{128, 8}));

  const json c = read_json(tmp / "peft" / "adapter_config.json");
  // The same fields a real PEFT writes (the shared Qwen config), field by field.
  EXPECT_EQ(keys_of(c), keys_of(read_json(shared_dir() / kPeftQwen / "adapter_config.json")));
  EXPECT_EQ(c["peft_type"], "LORA");
  EXPECT_EQ(c["task_type"], "CAUSAL_LM");
  EXPECT_EQ(c["r"], 8);
  EXPECT_EQ(c["lora_alpha"], 80);  // scale 10 = alpha / r
  EXPECT_EQ(c["lora_dropout"], 0.0);
  EXPECT_EQ(c["target_modules"], json({"q_proj", "v_proj"}));
  EXPECT_EQ(c["layers_to_transform"], json({20, 21, 22, 23}));
  EXPECT_EQ(c["layers_pattern"], "layers");
  EXPECT_EQ(c["bias"], "none");
  EXPECT_EQ(c["use_rslora"], false);
  EXPECT_EQ(c["use_dora"], false);
  EXPECT_EQ(c["fan_in_fan_out"], false);
  EXPECT_EQ(c["inference_mode"], true);
  EXPECT_EQ(c["base_model_name_or_path"],
            "/Users/wyek1n/Downloads/MLX/model/Qwen2.5-0.5B-Instruct");
  EXPECT_EQ(c["revision"], nullptr);
  EXPECT_EQ(c["modules_to_save"], nullptr);
  EXPECT_EQ(c["rank_pattern"], json::object());
  EXPECT_EQ(c["alpha_pattern"], json::object());
}

TEST(AdapterFile, MlxToPeftToMlxIsBitExact) {
  LORA_REQUIRE_SHARED(kMlxQwen);
  TempDir tmp("adapter");
  const fs::path src = shared_dir() / kMlxQwen;
  AdapterFile::read(src).write(tmp / "peft", AdapterFormat::peft);
  auto back = AdapterFile::read(tmp / "peft");
  EXPECT_EQ(back.format, AdapterFormat::peft);
  // layers_to_transform [20..23] does not say how deep the base is; MLX-LM's num_layers needs it.
  EXPECT_THROW(back.write(tmp / "mlx", AdapterFormat::mlx), std::runtime_error);
  back.base_num_layers = 24;
  back.write(tmp / "mlx", AdapterFormat::mlx);
  expect_same_tensors(src / "adapters.safetensors", tmp / "mlx" / "adapters.safetensors");

  const json orig = read_json(src / "adapter_config.json");
  const json c = read_json(tmp / "mlx" / "adapter_config.json");
  EXPECT_EQ(c["fine_tune_type"], "lora");
  EXPECT_EQ(c["num_layers"], orig["num_layers"]);
  EXPECT_EQ(c["lora_parameters"]["rank"], orig["lora_parameters"]["rank"]);
  EXPECT_EQ(c["lora_parameters"]["scale"].get<double>(), 10.0);
  EXPECT_EQ(c["lora_parameters"]["dropout"], orig["lora_parameters"]["dropout"]);
  EXPECT_EQ(c["lora_parameters"]["keys"], json({"self_attn.q_proj", "self_attn.v_proj"}));

  // Our own MLX file through PEFT and back is the same file, byte for byte.
  AdapterFile::read(tmp / "mlx").write(tmp / "peft2", AdapterFormat::peft);
  auto peft2 = AdapterFile::read(tmp / "peft2");
  peft2.base_num_layers = 24;
  peft2.write(tmp / "mlx2", AdapterFormat::mlx);
  EXPECT_EQ(test::read_file(tmp / "mlx" / "adapters.safetensors"),
            test::read_file(tmp / "mlx2" / "adapters.safetensors"));
}

TEST(AdapterFile, PeftToMlxToPeftIsBitExactForBothRealAdapters) {
  for (const char* rel : {kPeftQwen, kPeftGemma}) {
    LORA_REQUIRE_SHARED(rel);
    SCOPED_TRACE(rel);
    TempDir tmp("adapter");
    const fs::path src = shared_dir() / rel;
    const auto peft = AdapterFile::read(src);
    peft.write(tmp / "mlx", AdapterFormat::mlx);

    const auto st = SafetensorsFile::open(tmp / "mlx" / "adapters.safetensors");
    for (const auto& p : peft.pairs) {
      const std::string base = p.module_key();
      EXPECT_EQ(st.info(base + ".lora_a").shape, (std::vector<int64_t>{p.in, p.rank}));
      EXPECT_EQ(st.info(base + ".lora_b").shape, (std::vector<int64_t>{p.rank, p.out}));
    }
    EXPECT_EQ(st.tensors().size(), 2 * peft.pairs.size());
    const json c = read_json(tmp / "mlx" / "adapter_config.json");
    EXPECT_EQ(c["fine_tune_type"], "lora");
    EXPECT_EQ(c["num_layers"], peft.layers().size());  // all layers
    EXPECT_EQ(c["lora_parameters"]["rank"], peft.common_rank());
    EXPECT_EQ(c["lora_parameters"]["scale"].get<double>(), *peft.common_scale());
    EXPECT_EQ(c["lora_parameters"]["dropout"].get<double>(), 0.05);
    EXPECT_EQ(c["lora_parameters"]["keys"].get<std::vector<std::string>>(), peft.module_names());

    AdapterFile::read(tmp / "mlx").write(tmp / "peft", AdapterFormat::peft);
    expect_same_tensors(src / "adapter_model.safetensors",
                        tmp / "peft" / "adapter_model.safetensors");
    const json orig = read_json(src / "adapter_config.json");
    const json back = read_json(tmp / "peft" / "adapter_config.json");
    for (const char* field : {"r", "lora_alpha", "use_rslora", "layers_to_transform", "bias",
                              "task_type", "peft_type", "use_dora", "fan_in_fan_out"})
      EXPECT_EQ(back[field], orig[field]) << field;
    auto sorted = [](json j) {
      auto v = j.get<std::vector<std::string>>();
      std::sort(v.begin(), v.end());
      return v;
    };
    EXPECT_EQ(sorted(back["target_modules"]), sorted(orig["target_modules"]));
  }
}

// Writes a small PEFT adapter with the given tensor names and config into dir.
void write_peft(const fs::path& dir,
                const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors,
                const json& config) {
  fs::create_directories(dir);
  std::vector<TensorData> data;
  for (const auto& [name, shape] : tensors) {
    std::vector<float> v(static_cast<std::size_t>(shape[0] * shape[1]));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.01f * static_cast<float>(i % 17);
    data.push_back(TensorData::from_f32(name, shape, v));
  }
  write_safetensors(dir / "adapter_model.safetensors", data, {{"format", "pt"}});
  test::write_file(dir / "adapter_config.json", config.dump());
}

const json kSmallConfig = {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 16}};

TEST(AdapterFile, StripsWrappersAndRefusesUnknownTensors) {
  TempDir tmp("adapter");
  const std::vector<std::pair<std::string, std::vector<int64_t>>> pair = {
      {"base_model.model.model.language_model.layers.2.self_attn.q_proj.lora_A.weight", {4, 8}},
      {"base_model.model.model.language_model.layers.2.self_attn.q_proj.lora_B.weight", {6, 4}}};
  write_peft(tmp / "ok", pair, kSmallConfig);
  const auto a = AdapterFile::read(tmp / "ok");
  ASSERT_EQ(a.pairs.size(), 1u);
  EXPECT_EQ(a.pairs[0].layer, 2);
  EXPECT_EQ(a.pairs[0].module, "self_attn.q_proj");
  EXPECT_EQ(a.pairs[0].out, 6);
  // PEFT would apply a saved lm_head; running the adapter without it would differ from PEFT.
  auto with_head = pair;
  with_head.push_back({"base_model.model.lm_head.weight", {3, 8}});
  write_peft(tmp / "head", with_head, kSmallConfig);
  EXPECT_THROW(AdapterFile::read(tmp / "head"), std::runtime_error);
}

TEST(AdapterFile, RsloraAndRankPatternScales) {
  TempDir tmp("adapter");
  json config = kSmallConfig;
  config["use_rslora"] = true;
  config["rank_pattern"] = {{"model.layers.1.self_attn.v_proj", 2}};
  write_peft(tmp.path(),
             {{"base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", {4, 8}},
              {"base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight", {8, 4}},
              {"base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight", {2, 8}},
              {"base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight", {8, 2}}},
             config);
  const auto a = AdapterFile::read(tmp.path());
  ASSERT_EQ(a.pairs.size(), 2u);
  EXPECT_DOUBLE_EQ(a.pairs[0].scale, 16.0 / 2.0);             // alpha / sqrt(4)
  EXPECT_DOUBLE_EQ(a.pairs[1].scale, 16.0 / std::sqrt(2.0));  // alpha / sqrt(2)
  // PEFT out keeps the per-module rank; MLX-LM has one rank and refuses.
  a.write(tmp / "out", AdapterFormat::peft);
  const json c = read_json(tmp / "out" / "adapter_config.json");
  EXPECT_EQ(c["rank_pattern"]["model.layers.1.self_attn.v_proj"], 2);
  const auto back = AdapterFile::read(tmp / "out");
  EXPECT_DOUBLE_EQ(back.pairs[1].scale, a.pairs[1].scale);
  EXPECT_THROW(a.write(tmp / "mlx", AdapterFormat::mlx), std::runtime_error);
  EXPECT_FALSE(fs::exists(tmp / "mlx"));
}

TEST(AdapterFile, RefusesPickleFiles) {
  TempDir tmp("adapter");
  test::write_file(tmp / "adapter_model.bin", "not really a pickle");
  test::write_file(tmp / "adapter_config.json", kSmallConfig.dump());
  EXPECT_NE(test::adapter_read_error(tmp / "adapter_model.bin").find("pickle"), std::string::npos);
  EXPECT_NE(test::adapter_read_error(tmp.path()).find("pickle"), std::string::npos);
}

TEST(AdapterFile, ClearErrorsForBrokenAdapters) {
  TempDir tmp("adapter");
  // No LoRA tensor at all.
  write_peft(tmp / "empty", {{"base_model.model.lm_head.weight", {3, 8}}}, kSmallConfig);
  EXPECT_NE(test::adapter_read_error(tmp / "empty").find("no LoRA tensors"), std::string::npos);
  // A without B.
  write_peft(tmp / "half",
             {{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {4, 8}}},
             kSmallConfig);
  const std::string half = test::adapter_read_error(tmp / "half");
  EXPECT_NE(half.find("layers.0.self_attn.q_proj.lora_A.weight"), std::string::npos) << half;
  EXPECT_NE(half.find("no matching B"), std::string::npos) << half;
  // Tensor rank disagrees with the config's r.
  write_peft(tmp / "rank",
             {{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {2, 8}},
              {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", {8, 2}}},
             kSmallConfig);
  EXPECT_NE(test::adapter_read_error(tmp / "rank").find("has rank 2"), std::string::npos);
  // A and B ranks disagree.
  write_peft(tmp / "ab",
             {{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {4, 8}},
              {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", {8, 3}}},
             kSmallConfig);
  EXPECT_NE(test::adapter_read_error(tmp / "ab").find("disagree"), std::string::npos);
  // DoRA and non-LoRA PEFT types are refused, not half-applied.
  json dora = kSmallConfig;
  dora["use_dora"] = true;
  write_peft(tmp / "dora",
             {{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {4, 8}},
              {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", {8, 4}}},
             dora);
  EXPECT_NE(test::adapter_read_error(tmp / "dora").find("DoRA"), std::string::npos);
  // No config: the scale is unknown.
  fs::remove(tmp / "dora" / "adapter_config.json");
  EXPECT_NE(test::adapter_read_error(tmp / "dora").find("adapter_config.json"), std::string::npos);
  EXPECT_NE(test::adapter_read_error(tmp / "missing").find("no such"), std::string::npos);
}

TEST(AdapterFile, WritingIntoAFolderKeepsOtherFilesAndRefusesMixedFormats) {
  LORA_REQUIRE_SHARED(kPeftQwen);
  TempDir tmp("adapter");
  const auto a = AdapterFile::read(shared_dir() / kPeftQwen);
  fs::create_directories(tmp / "out");
  test::write_file(tmp / "out" / "0000100_adapters.safetensors", "checkpoint");
  a.write(tmp / "out", AdapterFormat::mlx);
  EXPECT_EQ(test::read_file(tmp / "out" / "0000100_adapters.safetensors"), "checkpoint");
  EXPECT_THROW(a.write(tmp / "out", AdapterFormat::peft), std::runtime_error);
  EXPECT_FALSE(fs::exists(tmp / "out" / "adapter_model.safetensors"));
}

TEST(ExportCli, ConvertsAndFailsWithoutWriting) {
  LORA_REQUIRE_SHARED(kPeftGemma);
  TempDir tmp("export");
  auto r = test::run_lora({"export", "--adapter-path", (shared_dir() / kPeftGemma).string(), "--to",
                           "mlx", "--out", (tmp / "mlx").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("72 pairs"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(tmp / "mlx" / "adapters.safetensors"));

  fs::create_directories(tmp / "bad");
  test::write_file(tmp / "bad" / "adapter_model.bin", "x");
  r = test::run_lora({"export", "--adapter-path", (tmp / "bad").string(), "--to", "peft", "--out",
                      (tmp / "never").string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("pickle"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "never"));
}

}  // namespace
}  // namespace lora
