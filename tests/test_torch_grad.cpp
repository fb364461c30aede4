// Differential test against torch autograd (scripts/torch_lora_grad.py over
// scripts/torch_reference.py): with a non-zero adapter on every projection (Phi-3: the four
// fused and unfused ones), the masked token-mean loss and every LoRA gradient must match torch,
// for every supported family (Gemma 2 and 3, SmolLM3, Phi-3, Mistral's sliding window included).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "support/test_support.h"
#include "trainer/io/safetensors.h"
#include "trainer/model_convert.h"
#include "trainer/transformer.h"

namespace lora {
namespace {

constexpr double kLossTol = 1e-5;  // absolute, on a loss of a few nats
constexpr double kGradTol = 1e-4;  // max |g - g_torch| / max |g_torch| per tensor

struct Case {
  std::string name;
  std::filesystem::path model_dir;
  int64_t batch = 2, seq = 12;
  bool dora = false;  // DoRA modules (a magnitude each), against PEFT's DoRA formulas
};

struct CaseResult {
  float loss = 0;
  std::map<std::string, std::vector<float>> grads;  // "layer.proj.A" -> gradient
};

TensorData i32_tensor(std::string name, std::vector<int64_t> shape, std::span<const int32_t> v) {
  TensorData t{std::move(name), DType::I32, std::move(shape), {}};
  t.bytes.resize(v.size_bytes());
  std::memcpy(t.bytes.data(), v.data(), v.size_bytes());
  return t;
}

// Runs loracpp on the case, writes its inputs for torch to `in`, returns loss and gradients.
CaseResult run_loracpp(const Case& c, const std::filesystem::path& in) {
  const Model model = load_model(c.model_dir);
  LoraConfig lc;
  lc.rank = 4;
  lc.alpha = 6;
  lc.keys = {Proj::q, Proj::k, Proj::v, Proj::o, Proj::gate, Proj::up, Proj::down};
  lc.dora = c.dora;
  LoraAdapter adapter = LoraAdapter::create(model, lc, 17);
  // A non-zero B, so every gradient path (dA included) is exercised.
  uint64_t state = 12345;
  for (LoraModule& m : adapter.modules)
    for (float& b : m.B.value.data) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      b = float(int64_t(state >> 40) % 2001 - 1000) * 2e-5f;
    }
  // Magnitudes moved off ||W|| (by up to 5%), as training leaves them.
  for (LoraModule& m : adapter.modules)
    for (float& v : m.magnitude.value.data) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      v *= 1.0f + float(int64_t(state >> 40) % 2001 - 1000) * 5e-5f;
    }

  const int64_t n = c.batch * c.seq, vocab = model.config.vocab_size;
  std::vector<int32_t> ids(n), targets(n);
  std::vector<float> weights(n);
  for (int64_t i = 0; i < n; ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    ids[i] = int32_t((state >> 33) % uint64_t(vocab));
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = i % c.seq;
    targets[i] = t + 1 < c.seq ? ids[i + 1] : ids[i - t];  // next token (wraps at the end)
    weights[i] = (i / c.seq == 0 && t < 4) || t == c.seq - 1 ? 0.0f : 1.0f;  // a masked prompt
  }
  float normalizer = 0;
  for (float w : weights) normalizer += w;

  AdapterStack stack{{&adapter}, true, 0};
  ag::Tape tape;
  ag::Var h = forward_hidden(tape, model, stack, ids, c.batch, c.seq);
  ag::Var loss = ag::cross_entropy_head(tape, h, model.head(), targets, weights, normalizer,
                                        model.config.final_logit_softcap);
  tape.backward(loss);

  CaseResult r{loss->value.data[0], {}};
  std::vector<TensorData> tensors = {i32_tensor("ids", {c.batch, c.seq}, ids),
                                     i32_tensor("targets", {c.batch, c.seq}, targets),
                                     TensorData::from_f32("weights", {c.batch, c.seq}, weights)};
  for (const LoraModule& m : adapter.modules) {
    const std::string key = std::to_string(m.layer) + "." + std::string(proj_name(m.proj));
    tensors.push_back(TensorData::from_f32("lora." + key + ".A", m.A.value.shape, m.A.value.data));
    tensors.push_back(TensorData::from_f32("lora." + key + ".B", m.B.value.shape, m.B.value.data));
    r.grads[key + ".A"] = m.A.grad.data;
    r.grads[key + ".B"] = m.B.grad.data;
    if (m.is_dora()) {
      tensors.push_back(TensorData::from_f32("lora." + key + ".m", m.magnitude.value.shape,
                                             m.magnitude.value.data));
      r.grads[key + ".m"] = m.magnitude.grad.data;
    }
  }
  char scale[64];
  std::snprintf(scale, sizeof scale, "%.9g", double(adapter.modules.at(0).scale));
  write_safetensors(in, tensors, {{"scale", scale}});
  return r;
}

class TorchGrad : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (test::torch_python().empty() || !test::have_shared("models/stories260K")) return;
    dir_ = std::make_unique<test::TempDir>("torch_grad");
    const std::string script = std::string(LORA_SOURCE_DIR) + "/scripts/make_random_model.py";
    auto make = [&](const std::string& name, std::vector<std::string> extra) {
      std::vector<std::string> argv = {test::torch_python(), script, (*dir_ / name).string()};
      argv.insert(argv.end(), extra.begin(), extra.end());
      const auto res = test::run_program(argv);
      ASSERT_EQ(res.exit_code, 0) << res.err;
      cases_.push_back({name, *dir_ / name});
    };
    cases_.push_back({"stories260K", test::shared_dir() / "models/stories260K"});
    ConvertOptions q4;
    q4.quantize_bits = 4;
    q4.group_size = 32;
    convert_model(test::shared_dir() / "models/stories260K", *dir_ / "stories260K-4bit", q4);
    cases_.push_back({"stories260K-4bit", *dir_ / "stories260K-4bit"});
    cases_.push_back({"stories260K-dora", test::shared_dir() / "models/stories260K", 2, 12, true});
    cases_.push_back({"stories260K-4bit-dora", *dir_ / "stories260K-4bit", 2, 12, true});
    make("qwen2", {"--arch", "qwen2", "--seed", "3"});
    make("qwen3", {"--arch", "qwen3", "--seed", "4"});
    make("qwen3-4bit", {"--arch", "qwen3", "--seed", "5", "--quantize-bits", "4"});
    make("llama-untied", {"--arch", "llama", "--seed", "6", "--kv-heads", "1"});
    // The families: sliding windows shorter than the 12-token sequence, f32/bf16/4-bit bases.
    const std::vector<std::string> gemma = {"--hidden",   "64", "--heads",  "4", "--kv-heads", "2",
                                            "--head-dim", "16", "--layers", "3"};
    auto with = [](std::vector<std::string> a, std::vector<std::string> b) {
      a.insert(a.end(), b.begin(), b.end());
      return a;
    };
    make("gemma3-text", with(gemma, {"--arch", "gemma3_text", "--seed", "7", "--tied",
                                     "--sliding-window", "5", "--layer-types", "sfs"}));
    make("gemma3-vision-bf16",
         with(gemma, {"--arch", "gemma3", "--seed", "8", "--tied", "--dtype", "bf16",
                      "--sliding-window", "4", "--linear-rope", "4"}));
    make("gemma3-text-4bit", with(gemma, {"--arch", "gemma3_text", "--seed", "9", "--tied",
                                          "--sliding-window", "3", "--quantize-bits", "4"}));
    make("gemma2", with(gemma, {"--arch", "gemma2", "--seed", "10", "--tied", "--sliding-window",
                                "5", "--softcap", "1.0", "3.0"}));
    make("smollm3", {"--arch", "smollm3", "--seed", "11", "--layers", "3"});
    make("mistral-window", {"--arch", "mistral", "--seed", "12", "--sliding-window", "4"});
    // Phi-3: LoRA on the fused qkv_proj and gate_up_proj (and o/down), partial rotary, LongRoPE
    // past its original length (the 12-token sequence against 8) or within it, 4-bit and bf16.
    const std::vector<std::string> phi3 = {"--arch",     "phi3", "--hidden", "64", "--heads", "4",
                                           "--head-dim", "16",   "--layers", "2"};
    make("phi3-longrope", with(phi3, {"--seed", "13", "--partial-rotary", "0.75", "--longrope", "8",
                                      "--sliding-window", "5"}));
    make("phi3-4bit", with(phi3, {"--seed", "14", "--longrope", "64", "--quantize-bits", "4"}));
    make("phi3-bf16", with(phi3, {"--seed", "15", "--dtype", "bf16", "--partial-rotary", "0.5",
                                  "--longrope", "4"}));
    // DoRA on the fused linears: one magnitude per row of qkv_proj and gate_up_proj.
    cases_.push_back({"phi3-longrope-dora", *dir_ / "phi3-longrope", 2, 12, true});

    std::vector<std::string> argv = {test::torch_python(),
                                     std::string(LORA_SOURCE_DIR) + "/scripts/torch_lora_grad.py"};
    for (const Case& c : cases_) {
      results_[c.name] = run_loracpp(c, *dir_ / (c.name + ".in.safetensors"));
      argv.insert(argv.end(),
                  {"--case", c.model_dir.string(), (*dir_ / (c.name + ".in.safetensors")).string(),
                   (*dir_ / (c.name + ".out.safetensors")).string()});
    }
    const auto res = test::run_program(argv);
    torch_error_ = res.exit_code == 0 ? "" : "torch_lora_grad.py failed: " + res.err;
  }
  static void TearDownTestSuite() { dir_.reset(); }

  void check(const std::string& name) {
    LORA_REQUIRE_TORCH();
    LORA_REQUIRE_SHARED("models/stories260K");
    ASSERT_EQ(torch_error_, "");
    ASSERT_TRUE(results_.count(name));
    const CaseResult& got = results_.at(name);
    const auto torch = SafetensorsFile::open(*dir_ / (name + ".out.safetensors"));
    const double want_loss = torch.read_f32("loss").at(0);
    EXPECT_NEAR(got.loss, want_loss, kLossTol) << name;
    EXPECT_TRUE(std::isfinite(got.loss));
    const std::size_t per_module = name.ends_with("-dora") ? 3 : 2;  // A, B (, m)
    const ModelConfig config = load_config(name);
    ASSERT_EQ(got.grads.size(),
              per_module * block_projs(config).size() * std::size_t(config.num_layers));
    double worst = 0;
    for (const auto& [key, grad] : got.grads) {
      const std::vector<float> want = torch.read_f32("grad." + key);
      ASSERT_EQ(want.size(), grad.size()) << key;
      double err = 0, scale = 0;
      for (std::size_t i = 0; i < want.size(); ++i) {
        err = std::max(err, std::abs(double(grad[i]) - double(want[i])));
        scale = std::max(scale, std::abs(double(want[i])));
      }
      EXPECT_GT(scale, 0.0) << name << " " << key << ": torch gradient is zero";
      EXPECT_LT(err / scale, kGradTol) << name << " " << key;
      worst = std::max(worst, err / scale);
    }
    std::printf("%s: loss %.7f (torch %.7f, |diff| %.2e), worst LoRA grad rel. error %.2e\n",
                name.c_str(), double(got.loss), want_loss, std::abs(got.loss - want_loss), worst);
  }
  static ModelConfig load_config(const std::string& name) {
    for (const Case& c : cases_)
      if (c.name == name) return ModelConfig::load(c.model_dir);
    throw std::runtime_error("no case " + name);
  }

  static inline std::unique_ptr<test::TempDir> dir_;
  static inline std::vector<Case> cases_;
  static inline std::map<std::string, CaseResult> results_;
  static inline std::string torch_error_;
};

TEST_F(TorchGrad, Stories260K) { check("stories260K"); }
TEST_F(TorchGrad, Stories260KFourBit) { check("stories260K-4bit"); }
TEST_F(TorchGrad, Stories260KDora) { check("stories260K-dora"); }
TEST_F(TorchGrad, Stories260KFourBitDora) { check("stories260K-4bit-dora"); }
TEST_F(TorchGrad, RandomQwen2WithBiases) { check("qwen2"); }
TEST_F(TorchGrad, RandomQwen3WithQkNorm) { check("qwen3"); }
TEST_F(TorchGrad, RandomQwen3FourBit) { check("qwen3-4bit"); }
TEST_F(TorchGrad, RandomLlamaUntiedHeadMultiQuery) { check("llama-untied"); }
TEST_F(TorchGrad, RandomGemma3TextSlidingWindow) { check("gemma3-text"); }
TEST_F(TorchGrad, RandomGemma3VisionCheckpointBf16LinearRope) { check("gemma3-vision-bf16"); }
TEST_F(TorchGrad, RandomGemma3TextFourBit) { check("gemma3-text-4bit"); }
TEST_F(TorchGrad, RandomGemma2SoftCapping) { check("gemma2"); }
TEST_F(TorchGrad, RandomSmolLM3NoRopeLayers) { check("smollm3"); }
TEST_F(TorchGrad, RandomMistralSlidingWindow) { check("mistral-window"); }
TEST_F(TorchGrad, RandomPhi3FusedPartialRotaryLongRope) { check("phi3-longrope"); }
TEST_F(TorchGrad, RandomPhi3FourBit) { check("phi3-4bit"); }
TEST_F(TorchGrad, RandomPhi3Bf16) { check("phi3-bf16"); }
TEST_F(TorchGrad, RandomPhi3FusedDora) { check("phi3-longrope-dora"); }

}  // namespace
}  // namespace lora
