// The model against references: stories260K's reference logits and greedy story, and random tiny
// models of every architecture against scripts/torch_reference.py (f32, bf16, MLX 4-bit).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/support/test_support.h"
#include "trainer/model.h"
#include "trainer/transformer.h"

namespace lora {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path stories_dir() { return test::shared_dir() / "models/stories260K"; }

std::vector<int32_t> as_ids(const json& j) { return j.get<std::vector<int32_t>>(); }

void expect_matches_reference(const Tensor& logits, const json& ref, const std::string& what) {
  const auto ids = as_ids(ref["input_ids"]);
  const int64_t vocab = logits.dim(1);
  ASSERT_EQ(logits.dim(0), static_cast<int64_t>(ids.size()));
  double loss = 0;
  for (std::size_t t = 0; t < ids.size(); ++t) {
    const float* row = logits.ptr() + t * vocab;
    for (int j = 0; j < 8; ++j)
      ASSERT_NEAR(row[j], ref["logits_first8"][t][j].get<double>(), 1e-4)
          << what << " position " << t << " logit " << j;
    const auto argmax = std::max_element(row, row + vocab) - row;
    EXPECT_EQ(argmax, ref["logits_argmax"][t].get<int64_t>()) << what << " position " << t;
    double mx = *std::max_element(row, row + vocab), sum = 0;
    for (int64_t j = 0; j < vocab; ++j) sum += std::exp(double(row[j]) - mx);
    const double lse = mx + std::log(sum);
    EXPECT_NEAR(lse, ref["logits_logsumexp"][t].get<double>(), 1e-4) << what << " position " << t;
    if (t + 1 < ids.size()) loss += lse - row[ids[t + 1]];
  }
  EXPECT_NEAR(loss / double(ids.size() - 1), ref["loss"].get<double>(), 1e-5) << what;
}

TEST(Stories260K, LogitsMatchTheReference) {
  LORA_REQUIRE_SHARED("models/stories260K/reference_logits.json");
  const json ref = json::parse(test::read_file(stories_dir() / "reference_logits.json"));
  const Model model = load_model(stories_dir());
  const auto ids = as_ids(ref["input_ids"]);
  const AdapterStack none;
  expect_matches_reference(forward_logits(model, none, ids, 1, static_cast<int64_t>(ids.size())),
                           ref, "full");

  // The KV-cached path, fed in uneven chunks, gives the same logits.
  KVCache cache = KVCache::create(model.config, 64);
  Tensor cached({static_cast<int64_t>(ids.size()), model.config.vocab_size});
  std::size_t done = 0;
  for (std::size_t chunk : {5u, 1u, 10u, 16u}) {
    const std::span<const int32_t> part(ids.data() + done, chunk);
    Tensor l = forward_cached(model, none, cache, part);
    std::copy(l.data.begin(), l.data.end(), cached.ptr() + done * model.config.vocab_size);
    done += chunk;
  }
  ASSERT_EQ(done, ids.size());
  expect_matches_reference(cached, ref, "cached");
}

// The 200 greedy ids recorded in VERIFY.txt (reference_forward.py, equal to llama2.c's run).
std::vector<int32_t> reference_greedy_ids() {
  std::istringstream in(test::read_file(stories_dir() / "VERIFY.txt"));
  std::string line;
  const std::string key = "generated ids: ";
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) != 0) continue;
    std::istringstream nums(line.substr(key.size()));
    std::vector<int32_t> ids;
    for (int32_t v; nums >> v;) ids.push_back(v);
    return ids;
  }
  return {};
}

TEST(Stories260K, Greedy200TokensFromBosEqualTheReference) {
  LORA_REQUIRE_SHARED("models/stories260K/VERIFY.txt");
  const auto want = reference_greedy_ids();
  ASSERT_EQ(want.size(), 200u);
  const Model model = load_model(stories_dir());
  const AdapterStack none;
  KVCache cache = KVCache::create(model.config, 256);
  std::vector<int32_t> next{static_cast<int32_t>(model.config.bos_token_id)};
  std::vector<int32_t> got;
  for (int i = 0; i < 200; ++i) {
    Tensor logits = forward_cached(model, none, cache, next);
    const float* row = logits.ptr() + (logits.dim(0) - 1) * logits.dim(1);
    next = {static_cast<int32_t>(std::max_element(row, row + logits.dim(1)) - row)};
    got.push_back(next[0]);
  }
  EXPECT_EQ(got, want);
}

TEST(Stories260K, LoadsInEveryStorage) {
  LORA_REQUIRE_SHARED("models/stories260K/model.safetensors");
  const Model f32 = load_model(stories_dir());
  EXPECT_EQ(f32.stored_bytes(), 260032u * 4);
  EXPECT_FALSE(f32.lm_head.has_value());
  EXPECT_EQ(&f32.head(), &f32.embed);
  EXPECT_EQ(f32.layers.size(), 5u);
  EXPECT_EQ(f32.layers[0].at(Proj::k).rows, 32);

  LoadOptions q4;
  q4.quantize_bits = 4;
  q4.quantize_group_size = 64;
  const Model quant = load_model(stories_dir(), q4);
  EXPECT_EQ(quant.embed.format, WeightFormat::Quantized);
  for (const auto& layer : quant.layers) {
    EXPECT_EQ(layer.at(Proj::q).format, WeightFormat::Quantized);
    EXPECT_EQ(layer.at(Proj::q).quant.bits, 4);
    EXPECT_EQ(layer.at(Proj::down).format, WeightFormat::F32);  // in = 172: not a multiple of 64
  }
  // down_proj (220 KB of the 1 MB) stays f32; the rest shrinks about 6x.
  EXPECT_LT(quant.stored_bytes(), f32.stored_bytes() / 2);
  // 4-bit moves the logits, but not wildly.
  const AdapterStack none;
  const std::vector<int32_t> ids{1, 403, 407, 261, 378};
  Tensor a = forward_logits(f32, none, ids, 1, 5), b = forward_logits(quant, none, ids, 1, 5);
  double max_diff = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    max_diff = std::max(max_diff, double(std::fabs(a.data[i] - b.data[i])));
  EXPECT_GT(max_diff, 0.0);
  EXPECT_LT(max_diff, 10.0);

  LoadOptions bad;
  bad.quantize_bits = 7;
  EXPECT_THROW(load_model(stories_dir(), bad), std::invalid_argument);
}

TEST(ProjNames, AllSpellings) {
  EXPECT_EQ(proj_name(Proj::gate), "gate_proj");
  EXPECT_EQ(proj_module_path(Proj::o), "self_attn.o_proj");
  EXPECT_EQ(proj_from_name("down_proj"), Proj::down);
  EXPECT_EQ(proj_from_name("self_attn.v_proj"), Proj::v);
  EXPECT_FALSE(proj_from_name("w1").has_value());
}

// ---- random tiny models against the torch reference ----

struct Variant {
  std::string arch;
  std::vector<std::string> flags;
  std::string name() const {
    std::string n = arch;
    for (const auto& f : flags) n += f;
    return n;
  }
};

fs::path script(const std::string& name) { return fs::path(LORA_SOURCE_DIR) / "scripts" / name; }

void make_model(const fs::path& dir, const Variant& v) {
  std::vector<std::string> argv{test::torch_python(),
                                script("make_random_model.py").string(),
                                dir.string(),
                                "--arch",
                                v.arch,
                                "--seed",
                                "7"};
  argv.insert(argv.end(), v.flags.begin(), v.flags.end());
  auto r = test::run_program(argv);
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

TEST(RandomModels, EveryArchitectureMatchesTorchInF32Bf16AndQuantized) {
  LORA_REQUIRE_TORCH();
  test::TempDir tmp("models");
  // Each architecture in f32, bf16 and MLX 4-bit (bf16 scales); llama also with llama3 rope
  // scaling, mistral tied, qwen2 f16.
  std::vector<Variant> variants;
  for (std::string arch : {"llama", "mistral", "qwen2", "qwen3"}) {
    variants.push_back({arch, {}});
    variants.push_back({arch, {"--dtype", "bf16"}});
    variants.push_back({arch, {"--dtype", "bf16", "--quantize-bits", "4", "--q-group-size", "32"}});
  }
  variants.push_back({"llama", {"--llama3-rope", "--head-dim", "32", "--heads", "2"}});
  variants.push_back({"mistral", {"--tied", "--quantize-bits", "8", "--q-group-size", "64"}});
  variants.push_back({"qwen2", {"--dtype", "f16", "--quantize-bits", "3", "--q-group-size", "32"}});
  std::vector<std::string> torch_argv{test::torch_python(), script("torch_reference.py").string()};
  for (std::size_t i = 0; i < variants.size(); ++i) {
    const auto dir = tmp / ("m" + std::to_string(i));
    make_model(dir, variants[i]);
    torch_argv.push_back(dir.string());
  }
  const std::vector<int32_t> ids{1, 17, 200, 3, 99, 45, 45, 250, 8, 0, 128, 64};
  torch_argv.push_back("--ids");
  for (int32_t id : ids) torch_argv.push_back(std::to_string(id));
  auto r = test::run_program(torch_argv);
  ASSERT_EQ(r.exit_code, 0) << r.err;

  std::istringstream lines(r.out);
  const AdapterStack none;
  for (const auto& v : variants) {
    std::string line;
    ASSERT_TRUE(std::getline(lines, line)) << "no torch output for " << v.name();
    const json ref = json::parse(line);
    const Model model = load_model(ref["model"].get<std::string>());
    const bool quantized =
        std::find(v.flags.begin(), v.flags.end(), "--quantize-bits") != v.flags.end();
    EXPECT_EQ(model.layers[0].at(Proj::q).format, quantized ? WeightFormat::Quantized
                                                  : v.flags.size() >= 2 && v.flags[1] == "bf16"
                                                      ? WeightFormat::BF16
                                                      : WeightFormat::F32)
        << v.name();
    const Tensor logits = forward_logits(model, none, ids, 1, static_cast<int64_t>(ids.size()));
    const int64_t vocab = logits.dim(1);
    double max_diff = 0, max_abs = 0;
    for (std::size_t t = 0; t < ids.size(); ++t)
      for (int64_t j = 0; j < vocab; ++j) {
        const double want = ref["logits"][t][j].get<double>();
        max_diff = std::max(max_diff, std::fabs(want - logits.data[t * vocab + j]));
        max_abs = std::max(max_abs, std::fabs(want));
      }
    EXPECT_LT(max_diff, 1e-4) << v.name() << " (max |logit| " << max_abs << ")";
    EXPECT_GT(max_abs, 0.5) << v.name();  // the comparison is not vacuous
  }
}

// The C++ quantizer and the script's numpy one implement the same MLX rule: quantizing a float
// model at load gives the very bits the script wrote.
TEST(RandomModels, QuantizeAtLoadEqualsTheScriptsMlxOutput) {
  LORA_REQUIRE_TORCH();
  test::TempDir tmp("models");
  make_model(tmp / "float", {"qwen3", {"--dtype", "bf16"}});
  make_model(tmp / "mlx",
             {"qwen3", {"--dtype", "bf16", "--quantize-bits", "4", "--q-group-size", "32"}});
  LoadOptions q4;
  q4.quantize_bits = 4;
  q4.quantize_group_size = 32;
  const Model a = load_model(tmp / "float", q4);
  const Model b = load_model(tmp / "mlx");
  for (std::size_t l = 0; l < a.layers.size(); ++l)
    for (const Proj proj : kSeparateProjs) {
      const int p = static_cast<int>(proj);
      const auto& qa = a.layers[l].proj[p].quant;
      const auto& qb = b.layers[l].proj[p].quant;
      ASSERT_EQ(a.layers[l].proj[p].format, WeightFormat::Quantized);
      EXPECT_EQ(qa.scale_dtype, DType::BF16);
      EXPECT_EQ(qb.scale_dtype, DType::BF16);
      EXPECT_EQ(qa.packed, qb.packed) << "layer " << l << " proj " << p;
      EXPECT_EQ(qa.scales, qb.scales) << "layer " << l << " proj " << p;
      EXPECT_EQ(qa.biases, qb.biases) << "layer " << l << " proj " << p;
    }
  EXPECT_EQ(a.embed.quant.packed, b.embed.quant.packed);
}

// ---- bad model folders ----

void rewrite_config(const fs::path& dir, const std::function<void(json&)>& edit) {
  json c = json::parse(test::read_file(dir / "config.json"));
  edit(c);
  test::write_file(dir / "config.json", c.dump());
}

std::string load_error(const fs::path& dir, const LoadOptions& o = {}) {
  try {
    load_model(dir, o);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(loaded without error)";
}

TEST(ModelLoad, MissingOrMisShapedTensorsAreNamed) {
  LORA_REQUIRE_TORCH();
  test::TempDir tmp("models");
  const auto dir = tmp / "m";
  make_model(dir, {"llama", {"--tied"}});
  rewrite_config(dir, [](json& c) { c["tie_word_embeddings"] = false; });
  EXPECT_NE(load_error(dir).find("lm_head.weight"), std::string::npos) << load_error(dir);

  rewrite_config(dir, [](json& c) {
    c["tie_word_embeddings"] = true;
    c["intermediate_size"] = 128;
  });
  const auto msg = load_error(dir);
  EXPECT_NE(msg.find("model.layers.0.mlp.gate_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[128, 64]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[96, 64]"), std::string::npos) << msg;

  rewrite_config(dir, [](json& c) {
    c["intermediate_size"] = 96;
    c["model_type"] = "qwen2";  // needs q/k/v biases the file lacks
  });
  EXPECT_NE(load_error(dir).find("self_attn.q_proj.bias"), std::string::npos) << load_error(dir);

  rewrite_config(dir, [](json& c) { c["model_type"] = "qwen3"; });
  EXPECT_NE(load_error(dir).find("q_norm"), std::string::npos) << load_error(dir);

  rewrite_config(dir, [](json& c) { c["model_type"] = "falcon"; });
  EXPECT_NE(load_error(dir).find("unsupported model_type 'falcon'"), std::string::npos)
      << load_error(dir);

  rewrite_config(dir, [](json& c) { c["model_type"] = "gemma3_text"; });  // four norms per block
  EXPECT_NE(load_error(dir).find("norm"), std::string::npos) << load_error(dir);
}

TEST(ModelLoad, QuantizedModelChecks) {
  LORA_REQUIRE_TORCH();
  test::TempDir tmp("models");
  const auto dir = tmp / "m";
  make_model(dir, {"llama", {"--quantize-bits", "4", "--q-group-size", "64"}});
  const Model m = load_model(dir);
  EXPECT_EQ(m.layers[1].at(Proj::gate).format, WeightFormat::Quantized);
  EXPECT_EQ(m.layers[1].at(Proj::gate).quant.group_size, 64);
  EXPECT_EQ(m.layers[1].at(Proj::down).format, WeightFormat::F32);  // in = 96
  LoadOptions again;
  again.quantize_bits = 4;
  EXPECT_NE(load_error(dir, again).find("already MLX-quantized"), std::string::npos);
}

}  // namespace
}  // namespace lora
