// PEFT adapter files read as PEFT reads them: rank_pattern/alpha_pattern are regular expressions
// tried in the file's order (refused where PEFT versions disagree), files with anything PEFT
// applies and this program cannot (modules_to_save, LoRA on lm_head/embed_tokens) are refused,
// tensors PEFT would skip are refused, partial-layer adapters export with exactly their layers,
// and PEFT's fields (use_rslora, lora_alpha) survive PEFT -> MLX-LM -> PEFT. Each file is laid
// out as PEFT's save_pretrained writes one (names, metadata, every config field).
#include <gtest/gtest.h>

#include <cmath>

#include "tests/adapter_test_util.h"
#include "tests/support/test_support.h"
#include "trainer/io/adapter_file.h"
#include "trainer/io/adapter_io.h"
#include "trainer/io/peft_patterns.h"
#include "trainer/io/safetensors.h"

namespace lora {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;
using test::TempDir;

// adapter_config.json as PEFT 0.12 writes it for a causal LM.
ordered_json peft_config(int r, double alpha, std::vector<std::string> targets) {
  return {{"alpha_pattern", ordered_json::object()},
          {"auto_mapping", nullptr},
          {"base_model_name_or_path", "stories260K"},
          {"bias", "none"},
          {"fan_in_fan_out", false},
          {"inference_mode", true},
          {"init_lora_weights", true},
          {"layers_pattern", nullptr},
          {"layers_to_transform", nullptr},
          {"loftq_config", ordered_json::object()},
          {"lora_alpha", alpha},
          {"lora_dropout", 0.05},
          {"megatron_config", nullptr},
          {"megatron_core", "megatron.core"},
          {"modules_to_save", nullptr},
          {"peft_type", "LORA"},
          {"r", r},
          {"rank_pattern", ordered_json::object()},
          {"revision", nullptr},
          {"target_modules", targets},
          {"task_type", "CAUSAL_LM"},
          {"use_dora", false},
          {"use_rslora", false}};
}

struct PeftTensor {
  std::string name;
  std::vector<int64_t> shape;
};

// PEFT's saved names: base_model.model.<module>.lora_A.weight (adapter name dropped).
std::vector<PeftTensor> lora_pair(int layer, const std::string& module, int rank, int in, int out) {
  const std::string base = "base_model.model.model.layers." + std::to_string(layer) + "." + module;
  return {{base + ".lora_A.weight", {rank, in}}, {base + ".lora_B.weight", {out, rank}}};
}

void write_peft(const fs::path& dir, const std::vector<PeftTensor>& tensors,
                const ordered_json& config) {
  fs::create_directories(dir);
  std::vector<TensorData> data;
  for (const auto& t : tensors) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    std::vector<float> v(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.01f * static_cast<float>(i % 17) - 0.05f;
    data.push_back(TensorData::from_f32(t.name, t.shape, v));
  }
  write_safetensors(dir / "adapter_model.safetensors", data, {{"format", "pt"}});
  test::write_file(dir / "adapter_config.json", config.dump(2));
}

json read_json(const fs::path& p) { return json::parse(test::read_file(p)); }

// q_proj and v_proj of layers 0 and 1, rank 4, [8 -> 8].
std::vector<PeftTensor> two_layers_qv() {
  std::vector<PeftTensor> t;
  for (int layer : {0, 1})
    for (const char* m : {"self_attn.q_proj", "self_attn.v_proj"}) {
      auto p = lora_pair(layer, m, 4, 8, 8);
      t.insert(t.end(), p.begin(), p.end());
    }
  return t;
}

double scale_of(const AdapterFile& a, int64_t layer, const std::string& module) {
  for (const auto& p : a.pairs)
    if (p.layer == layer && p.module == module) return p.scale;
  ADD_FAILURE() << "no pair " << layer << " " << module;
  return 0;
}

TEST(PeftPatterns, PythonReMatchSemantics) {
  // re.match anchors at the start only; `$` ends; alternation splits the whole pattern.
  EXPECT_TRUE(python_re_match(".*\\.q_proj$", "model.layers.0.self_attn.q_proj", "t"));
  EXPECT_FALSE(python_re_match(".*\\.q_proj$", "model.layers.0.self_attn.q_proj_x", "t"));
  EXPECT_TRUE(python_re_match("model", "model.layers.0", "t"));    // a prefix is a match
  EXPECT_FALSE(python_re_match("layers", "model.layers.0", "t"));  // not at the start
  EXPECT_TRUE(python_re_match(".*\\.x$|model", "model.layers", "t"));
  EXPECT_TRUE(python_re_match("(?P<n>model)\\.layers", "model.layers", "t"));  // Python syntax
  EXPECT_THROW(python_re_match("(", "x", "t"), std::runtime_error);
}

TEST(PeftPatterns, RegexAlphaKeysScaleTheModulesTheyMatch) {
  TempDir tmp("peft");
  auto config = peft_config(4, 16, {"q_proj", "v_proj"});
  // A regular expression PEFT applies to layer 1's v_proj only: a plain suffix match misses it.
  config["alpha_pattern"] = {{"layers\\.[1-9]\\.self_attn\\.v_proj", 32}};
  config["rank_pattern"] = {{"q_proj", 4}};
  write_peft(tmp.path(), two_layers_qv(), config);
  const auto a = AdapterFile::read(tmp.path());
  EXPECT_DOUBLE_EQ(scale_of(a, 0, "self_attn.q_proj"), 4.0);
  EXPECT_DOUBLE_EQ(scale_of(a, 0, "self_attn.v_proj"), 4.0);
  EXPECT_DOUBLE_EQ(scale_of(a, 1, "self_attn.q_proj"), 4.0);
  EXPECT_DOUBLE_EQ(scale_of(a, 1, "self_attn.v_proj"), 8.0);  // 32 / 4
}

TEST(PeftPatterns, KeysAreTriedInTheFilesOrder) {
  TempDir tmp("peft");
  auto config = peft_config(4, 16, {"q_proj", "v_proj"});
  // Sorted, "layers..." comes first; in the file "v_proj" does, and PEFT takes the first match.
  config["alpha_pattern"] = ordered_json::object();
  config["alpha_pattern"]["v_proj"] = 32;
  config["alpha_pattern"]["layers\\.0\\.self_attn\\.v_proj"] = 8;
  write_peft(tmp.path(), two_layers_qv(), config);
  const auto a = AdapterFile::read(tmp.path());
  EXPECT_DOUBLE_EQ(scale_of(a, 0, "self_attn.v_proj"), 8.0);  // 32 / 4, not 8 / 4
  EXPECT_DOUBLE_EQ(scale_of(a, 1, "self_attn.v_proj"), 8.0);
  EXPECT_DOUBLE_EQ(scale_of(a, 0, "self_attn.q_proj"), 4.0);
}

TEST(PeftPatterns, RefusesWhatPeftVersionsReadDifferentlyAndBadExpressions) {
  TempDir tmp("peft");
  // PEFT <= 0.13 picks the first key of both maps ("q_proj") and looks it up in alpha_pattern
  // (missing: lora_alpha); PEFT >= 0.14 finds layer 0's full name there (alpha 4).
  auto config = peft_config(4, 16, {"q_proj", "v_proj"});
  config["rank_pattern"] = {{"q_proj", 4}};
  config["alpha_pattern"] = {{"model.layers.0.self_attn.q_proj", 4}};
  write_peft(tmp / "versions", two_layers_qv(), config);
  const std::string e = test::adapter_read_error(tmp / "versions");
  EXPECT_NE(e.find("model.layers.0.self_attn.q_proj"), std::string::npos) << e;
  EXPECT_NE(e.find("PEFT 0.13"), std::string::npos) << e;

  config["rank_pattern"] = ordered_json::object();
  config["alpha_pattern"] = {{"q_proj(", 4}};
  write_peft(tmp / "bad", two_layers_qv(), config);
  EXPECT_NE(test::adapter_read_error(tmp / "bad").find("not a regular expression"),
            std::string::npos);
}

TEST(PeftFiles, RefusesModulesToSaveAndLoraOnHeadOrEmbeddings) {
  TempDir tmp("peft");
  auto config = peft_config(4, 16, {"q_proj"});
  config["modules_to_save"] = {"lm_head"};
  auto tensors = lora_pair(0, "self_attn.q_proj", 4, 8, 8);
  tensors.push_back({"base_model.model.lm_head.weight", {32, 8}});  // saved whole module
  write_peft(tmp / "saved", tensors, config);
  std::string e = test::adapter_read_error(tmp / "saved");
  EXPECT_NE(e.find("base_model.model.lm_head.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("modules_to_save"), std::string::npos) << e;

  config = peft_config(4, 16, {"q_proj", "lm_head"});
  tensors = lora_pair(0, "self_attn.q_proj", 4, 8, 8);
  tensors.push_back({"base_model.model.lm_head.lora_A.weight", {4, 8}});
  tensors.push_back({"base_model.model.lm_head.lora_B.weight", {32, 4}});
  write_peft(tmp / "head", tensors, config);
  EXPECT_NE(test::adapter_read_error(tmp / "head").find("lm_head.lora_A.weight"),
            std::string::npos);

  config = peft_config(4, 16, {"q_proj", "embed_tokens"});
  tensors = lora_pair(0, "self_attn.q_proj", 4, 8, 8);
  tensors.push_back({"base_model.model.model.embed_tokens.lora_embedding_A", {4, 32}});
  tensors.push_back({"base_model.model.model.embed_tokens.lora_embedding_B", {8, 4}});
  write_peft(tmp / "embed", tensors, config);
  EXPECT_NE(test::adapter_read_error(tmp / "embed").find("embed_tokens.lora_embedding_A"),
            std::string::npos);
}

TEST(PeftFiles, RefusesTensorsPeftWouldNotLoadAndFieldsThatChangeTheMaths) {
  TempDir tmp("peft");
  auto config = peft_config(4, 16, {"q_proj"});  // v_proj tensors present but not targeted
  write_peft(tmp / "targets", two_layers_qv(), config);
  EXPECT_NE(test::adapter_read_error(tmp / "targets").find("target_modules"), std::string::npos);

  config = peft_config(4, 16, {"q_proj", "v_proj"});
  config["layers_to_transform"] = {0};
  config["layers_pattern"] = "layers";
  write_peft(tmp / "layers", two_layers_qv(), config);
  EXPECT_NE(test::adapter_read_error(tmp / "layers").find("layers_to_transform"),
            std::string::npos);

  config = peft_config(4, 16, {"q_proj", "v_proj"});
  config["fan_in_fan_out"] = true;
  write_peft(tmp / "fan", two_layers_qv(), config);
  EXPECT_NE(test::adapter_read_error(tmp / "fan").find("fan_in_fan_out"), std::string::npos);

  config = peft_config(4, 16, {"q_proj", "v_proj"});
  config["init_lora_weights"] = "pissa";
  write_peft(tmp / "pissa", two_layers_qv(), config);
  EXPECT_NE(test::adapter_read_error(tmp / "pissa").find("init_lora_weights"), std::string::npos);

  // target_modules as one regular expression (PEFT full-matches it).
  config = peft_config(4, 16, {});
  config["target_modules"] = ".*\\.(q|v)_proj";
  write_peft(tmp / "regex", two_layers_qv(), config);
  EXPECT_EQ(AdapterFile::read(tmp / "regex").pairs.size(), 4u);
}

// Layers 0-2 of a 5-layer base (stories260K's depth), as PEFT writes layers_to_transform.
void write_first_three_layers(const fs::path& dir) {
  auto config = peft_config(4, 16, {"q_proj"});
  config["layers_to_transform"] = {0, 1, 2};
  config["layers_pattern"] = "layers";
  std::vector<PeftTensor> tensors;
  for (int layer = 0; layer < 3; ++layer) {
    auto p = lora_pair(layer, "self_attn.q_proj", 4, 64, 64);
    tensors.insert(tensors.end(), p.begin(), p.end());
  }
  write_peft(dir, tensors, config);
}

TEST(PeftFiles, PartialLayerExportStatesExactlyThoseLayers) {
  TempDir tmp("peft");
  write_first_three_layers(tmp / "src");
  const auto a = AdapterFile::read(tmp / "src");
  EXPECT_FALSE(a.base_num_layers);  // the file does not say how deep the base is
  // PEFT -> PEFT keeps the list without knowing the depth.
  a.write(tmp / "peft", AdapterFormat::peft);
  EXPECT_EQ(read_json(tmp / "peft" / "adapter_config.json")["layers_to_transform"],
            json({0, 1, 2}));
  // MLX-LM counts layers from the last one: refused without the depth, not written as "all".
  try {
    a.write(tmp / "mlx", AdapterFormat::mlx);
    ADD_FAILURE() << "wrote an MLX-LM adapter without knowing the base's depth";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("layers 0-2"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(tmp / "mlx"));

  // With the depth (CLI: --model reads it from config.json), MLX-LM gets num_layers 5 and the
  // way back to PEFT states layers 0-2 again.
  LORA_REQUIRE_SHARED(test::kStories);
  auto r =
      test::run_lora({"export", "--adapter-path", (tmp / "src").string(), "--to", "mlx", "--out",
                      (tmp / "mlx").string(), "--model", test::stories_dir().string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_json(tmp / "mlx" / "adapter_config.json")["num_layers"], 5);
  AdapterFile::read(tmp / "mlx").write(tmp / "back", AdapterFormat::peft);
  const json back = read_json(tmp / "back" / "adapter_config.json");
  EXPECT_EQ(back["layers_to_transform"], json({0, 1, 2}));
  EXPECT_EQ(back["layers_pattern"], "layers");
  r = test::run_lora({"export", "--adapter-path", (tmp / "src").string(), "--to", "mlx", "--out",
                      (tmp / "never").string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("layer count"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "never"));
}

TEST(PeftFiles, RsloraAndAlphaSurvivePeftToMlxToPeft) {
  TempDir tmp("peft");
  auto config = peft_config(4, 16, {"q_proj", "v_proj"});
  config["use_rslora"] = true;
  write_peft(tmp / "src", two_layers_qv(), config);
  const auto a = AdapterFile::read(tmp / "src");
  EXPECT_DOUBLE_EQ(*a.common_scale(), 8.0);  // 16 / sqrt(4)
  a.write(tmp / "mlx", AdapterFormat::mlx);
  EXPECT_DOUBLE_EQ(
      read_json(tmp / "mlx" / "adapter_config.json")["lora_parameters"]["scale"].get<double>(),
      8.0);
  AdapterFile::read(tmp / "mlx").write(tmp / "peft", AdapterFormat::peft);
  const json back = read_json(tmp / "peft" / "adapter_config.json");
  EXPECT_EQ(back["use_rslora"], true);
  EXPECT_EQ(back["lora_alpha"], 16);
  EXPECT_TRUE(back["lora_alpha"].is_number_integer());
  EXPECT_EQ(back["r"], 4);
  EXPECT_EQ(back["alpha_pattern"], json::object());
  EXPECT_DOUBLE_EQ(*AdapterFile::read(tmp / "peft").common_scale(), 8.0);
}

TEST(PeftFiles, TrainedAdapterNamesTheUsersAlphaBaseAndWritesAModelCard) {
  LORA_REQUIRE_SHARED(test::kStories);
  TempDir tmp("peft");
  const Model model = load_model(fs::absolute(test::stories_dir()));
  LoraConfig config;
  config.rank = 7;  // 16 / 7 is not a float: alpha * rank from the float scale is 16.0000007
  config.alpha = 16;
  config.keys = {Proj::q, Proj::v};
  config.num_layers = 2;
  const LoraAdapter adapter = LoraAdapter::create(model, config, 1);
  save_adapter(tmp / "a", adapter, model, AdapterFormat::peft, json::object(),
               TrainingRun{"data/stories", 30, 1.25, 1.5, std::nullopt});
  const json c = read_json(tmp / "a" / "adapter_config.json");
  EXPECT_EQ(c["lora_alpha"], 16);
  EXPECT_TRUE(c["lora_alpha"].is_number_integer()) << c["lora_alpha"];
  EXPECT_EQ(c["alpha_pattern"], json::object());
  EXPECT_EQ(c["layers_to_transform"], json({3, 4}));
  // The shared model's folder (an absolute path here) is named by its folder name.
  const std::string base = c["base_model_name_or_path"].get<std::string>();
  EXPECT_EQ(base, "stories260K");

  const std::string card = test::read_file(tmp / "a" / "README.md");
  EXPECT_EQ(card.rfind("---\nbase_model: stories260K\nlibrary_name: peft\n", 0), 0u) << card;
  for (const char* want :
       {"| rank | 7 |", "| lora_alpha | 16 |", "self_attn.q_proj, self_attn.v_proj",
        "| layers | 3-4 of 5 |", "| data | data/stories |", "| steps | 30 |",
        "| final training loss | 1.25 |", "| final validation loss | 1.5 |",
        "PeftModel.from_pretrained"})
    EXPECT_NE(card.find(want), std::string::npos) << want << "\n" << card;
}

TEST(PeftFiles, BaseModelNameIsHubStyleOrAsGiven) {
  EXPECT_EQ(base_model_name({{"_name_or_path", "HuggingFaceTB/SmolLM2-135M"}}, "models/m/smol"),
            "HuggingFaceTB/SmolLM2-135M");
  // A local absolute path (here one under the temp folder) is reduced to the folder's name.
  const std::string local = (fs::temp_directory_path() / "m" / "smol").string();
  EXPECT_EQ(base_model_name({{"_name_or_path", local}}, local + "/"), "smol");
  EXPECT_EQ(base_model_name(json::object(), "../shared/models/stories260K"),
            "../shared/models/stories260K");
}

}  // namespace
}  // namespace lora
