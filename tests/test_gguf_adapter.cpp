// `lora export --to gguf` and `lora merge --out FILE.gguf`: llama.cpp's LoRA layout (keys, names,
// shapes, alpha, q/k rows in llama.cpp's order for Llama bases), and end to end: an adapter trained
// on a GGUF base, loaded by the real llama.cpp with that base, gives the same greedy text as `lora
// generate`; the same adapter on the Hugging Face folder of the model gives it too (no q/k layout
// leaks into it), and so does the adapter merged into the GGUF file, read by llama.cpp and by us.
#include <gtest/gtest.h>

#include <cstring>
#include <iostream>

#include "llama_cpp_oracle.h"
#include "train_fixtures.h"
#include "trainer/gguf_model.h"
#include "trainer/io/adapter_gguf.h"
#include "trainer/io/gguf_file.h"

namespace lora {
namespace {

using json = nlohmann::json;

std::filesystem::path gguf(const std::string& type) {
  return test::shared_dir() / "models/stories260K-gguf" / ("stories260K-" + type + ".gguf");
}

AdapterPair pair(int64_t layer, const std::string& module, int64_t out, int64_t in, int64_t rank,
                 double scale) {
  AdapterPair p;
  p.layer = layer;
  p.module = module;
  p.out = out;
  p.in = in;
  p.rank = rank;
  p.scale = scale;
  for (int64_t i = 0; i < rank * in; ++i) p.a.push_back(float(i) * 0.5f);
  for (int64_t i = 0; i < out * rank; ++i) p.b.push_back(float(i));
  p.a_name = "a";
  p.b_name = "b";
  return p;
}

std::vector<float> floats(const GgufFile& f, const std::string& name) { return f.read_f32(name); }

TEST(GgufAdapter, LlamaCppLayoutWithPermutedQkRows) {
  test::TempDir tmp("gguf-adapter");
  ModelConfig base;
  base.model_type = "llama";
  base.num_layers = 2;
  base.num_heads = 2;
  base.num_kv_heads = 1;
  AdapterFile a;
  a.pairs = {pair(0, "self_attn.q_proj", 8, 8, 2, 2.0), pair(1, "self_attn.k_proj", 4, 8, 2, 2.0),
             pair(1, "self_attn.v_proj", 4, 8, 2, 2.0), pair(1, "mlp.down_proj", 8, 6, 1, 2.0)};
  write_gguf_adapter(a, base, tmp / "a.gguf");
  const GgufFile f = GgufFile::open(tmp / "a.gguf");
  EXPECT_EQ(f.get_string("general.type"), "adapter");
  EXPECT_EQ(f.get_string("adapter.type"), "lora");
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_real("adapter.lora.alpha"), 4.0);  // scale 2 at rank 2
  EXPECT_EQ(f.tensor("blk.0.attn_q.weight.lora_a").shape(), (std::vector<int64_t>{2, 8}));
  EXPECT_EQ(f.tensor("blk.0.attn_q.weight.lora_b").shape(), (std::vector<int64_t>{8, 2}));
  EXPECT_EQ(floats(f, "blk.0.attn_q.weight.lora_a"), a.pairs[0].a);
  // q: 2 heads of 4 rows; file rows (0,1,2,3) of a head are our rows (0,2,1,3).
  const auto qb = floats(f, "blk.0.attn_q.weight.lora_b");
  const int order[8] = {0, 2, 1, 3, 4, 6, 5, 7};
  for (int r = 0; r < 8; ++r)
    for (int k = 0; k < 2; ++k) EXPECT_EQ(qb[r * 2 + k], a.pairs[0].b[order[r] * 2 + k]) << r;
  // k: one kv head of 4 rows, the same order; v is not permuted.
  const auto kb = floats(f, "blk.1.attn_k.weight.lora_b");
  for (int r = 0; r < 4; ++r) EXPECT_EQ(kb[r * 2], a.pairs[1].b[order[r] * 2]) << r;
  EXPECT_EQ(floats(f, "blk.1.attn_v.weight.lora_b"), a.pairs[2].b);
  // down has rank 1 at the same scale: alpha / rank = 4, not 2, so B carries a factor 1/2.
  const auto db = floats(f, "blk.1.ffn_down.weight.lora_b");
  for (std::size_t i = 0; i < db.size(); ++i) EXPECT_EQ(db[i], a.pairs[3].b[i] * 0.5f);

  base.model_type = "qwen2";
  write_gguf_adapter(a, base, tmp / "q.gguf");
  EXPECT_EQ(floats(GgufFile::open(tmp / "q.gguf"), "blk.0.attn_q.weight.lora_b"), a.pairs[0].b);
  base.num_layers = 1;
  EXPECT_THROW(write_gguf_adapter(a, base, tmp / "x.gguf"), std::invalid_argument);
}

// Per-record loss: `lora eval` with the adapter against llama.cpp's log-probabilities of the
// same tokens with the exported GGUF adapter `file`, within 1e-4, on three held-out records.
void expect_record_losses_match(const std::filesystem::path& tmp,
                                const std::filesystem::path& adapter,
                                const std::filesystem::path& file) {
  const auto records = test::story_sentences();
  json loss_jobs = json::array();
  std::vector<double> our_losses;
  std::vector<std::vector<int64_t>> sequences;
  for (std::size_t i = 40; i < 43 && i < records.size(); ++i) {
    const auto rec = tmp / ("record" + std::to_string(i) + ".jsonl");
    test::write_jsonl(rec, {json{{"text", records[i]}}});
    auto ev = test::run_lora({"--json", "eval", "--model", gguf("f32").string(), "--adapter-path",
                              adapter.string(), "--data", rec.string()});
    ASSERT_EQ(ev.exit_code, 0) << ev.err;
    const json result = json::parse(ev.out);
    auto tk = test::run_lora({"tokenize", "--model", gguf("f32").string()},
                             json{{"text", records[i]}}.dump() + "\n");
    ASSERT_EQ(tk.exit_code, 0) << tk.err;
    auto ids = json::parse(tk.out)["ids_with_special"].get<std::vector<int64_t>>();
    // Text records end with EOS when eval scores one target per token after BOS.
    if (result["tokens"].get<std::size_t>() == ids.size()) ids.push_back(2);
    ASSERT_EQ(result["tokens"].get<std::size_t>() + 1, ids.size());
    our_losses.push_back(result["loss"].get<double>());
    sequences.push_back(ids);
    loss_jobs.push_back({{"model", gguf("f32").string()},
                         {"lora", file.string()},
                         {"tokens", json(std::vector<int64_t>(ids.begin(), ids.end() - 1))},
                         {"logprobs", true}});
  }
  const json lps = test::llama_cpp_jobs(loss_jobs);
  ASSERT_EQ(lps.size(), sequences.size());
  for (std::size_t r = 0; r < sequences.size(); ++r) {
    double sum = 0;
    for (std::size_t t = 0; t + 1 < sequences[r].size(); ++t)
      sum -= lps[r]["logprobs"][t][sequences[r][t + 1]].get<double>();
    const double theirs = sum / double(sequences[r].size() - 1);
    EXPECT_NEAR(our_losses[r], theirs, 1e-4) << "record " << r;
    std::cout << "record " << r << ": loss " << our_losses[r] << ", llama.cpp " << theirs
              << " (difference " << our_losses[r] - theirs << ")\n";
  }
}

TEST(GgufAdapter, TrainedOnAGgufBaseLlamaCppAgrees) {
  LORA_REQUIRE_SHARED("models/stories260K-gguf/stories260K-f32.gguf");
  LORA_REQUIRE_SHARED(test::kStoriesText);
  LORA_REQUIRE_LLAMA_CPP();
  test::TempDir tmp("gguf-adapter");
  test::make_story_data(tmp / "data");
  const auto adapter = tmp / "adapter";
  auto t = test::run_lora({"--threads",
                           "1",
                           "train",
                           "--model",
                           gguf("f32").string(),
                           "--data",
                           (tmp / "data").string(),
                           "--adapter-path",
                           adapter.string(),
                           "--iters",
                           "30",
                           "--batch-size",
                           "4",
                           "--max-seq-length",
                           "64",
                           "--learning-rate",
                           "1e-2",
                           "--num-layers",
                           "-1",
                           "--lora-keys",
                           "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                           "--steps-per-eval",
                           "0",
                           "--save-every",
                           "0"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  const auto file = tmp / "adapter.gguf";
  auto e = test::run_lora({"export", "--adapter-path", adapter.string(), "--to", "gguf", "--out",
                           file.string(), "--model", gguf("f32").string()});
  ASSERT_EQ(e.exit_code, 0) << e.err;

  auto generate = [&](const std::filesystem::path& model, bool with_adapter) {
    std::vector<std::string> args = {"--json",   "generate",         "--model",      model.string(),
                                     "--prompt", "Once upon a time", "--max-tokens", "40"};
    if (with_adapter) args.insert(args.end(), {"--adapter-path", adapter.string()});
    auto r = test::run_lora(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json::parse(r.out);
  };
  const json mine = generate(gguf("f32"), true);
  const json plain = generate(gguf("f32"), false);
  ASSERT_NE(mine["tokens"], plain["tokens"])
      << "the adapter must change the text for the test to mean anything";
  // Merged into the F32 file, and requantized to Q8_0.
  const auto merged = tmp / "merged.gguf", q8 = tmp / "merged-q8_0.gguf";
  auto m = test::run_lora({"--json", "merge", "--model", gguf("f32").string(), "--adapter-path",
                           adapter.string(), "--out", merged.string()});
  ASSERT_EQ(m.exit_code, 0) << m.err;
  EXPECT_EQ(json::parse(m.out)["merged_tensors"], 35);  // 7 projections x 5 layers
  EXPECT_NEAR(json::parse(m.out)["delta_kept"].get<double>(), 1.0, 1e-4);
  m = test::run_lora({"--json", "merge", "--model", gguf("f32").string(), "--adapter-path",
                      adapter.string(), "--out", q8.string(), "--outtype", "q8_0"});
  ASSERT_EQ(m.exit_code, 0) << m.err;
  EXPECT_GT(json::parse(m.out)["delta_kept"].get<double>(), 0.9);
  EXPECT_EQ(GgufFile::open(q8).tensor("blk.0.attn_q.weight").type, GgmlType::Q8_0);
  // Requantized to IQ4_NL: the 64-wide rows take it; the 172-wide ffn_down rows keep their F32.
  const auto iq4 = tmp / "merged-iq4_nl.gguf";
  m = test::run_lora({"--json", "merge", "--model", gguf("f32").string(), "--adapter-path",
                      adapter.string(), "--out", iq4.string(), "--outtype", "iq4_nl"});
  ASSERT_EQ(m.exit_code, 0) << m.err;
  EXPECT_EQ(GgufFile::open(iq4).tensor("blk.0.attn_q.weight").type, GgmlType::IQ4_NL);
  EXPECT_EQ(GgufFile::open(iq4).tensor("blk.0.ffn_down.weight").type, GgmlType::F32);

  const json prompt = {1, 403, 407, 261, 378};
  const json refs = test::llama_cpp_jobs(
      json::array({json{{"model", gguf("f32").string()},
                        {"lora", file.string()},
                        {"tokens", prompt},
                        {"greedy", 40}},
                   json{{"model", merged.string()}, {"tokens", prompt}, {"greedy", 40}},
                   json{{"model", q8.string()}, {"tokens", prompt}, {"greedy", 40}}}));
  ASSERT_EQ(refs.size(), 3u);
  // llama.cpp with the exported adapter, and with the merged file: our text with the adapter.
  EXPECT_EQ(mine["tokens"], refs[0]["tokens"]);
  EXPECT_EQ(mine["text"], refs[0]["text"]);
  EXPECT_EQ(refs[1]["tokens"], mine["tokens"]);
  EXPECT_EQ(generate(merged, false)["tokens"], mine["tokens"]);
  // On the Q8_0 file llama.cpp and we agree with each other, but for a near tie its 8-bit
  // activations may flip.
  test::expect_same_text_or_near_tie(q8, prompt, generate(q8, false)["tokens"], refs[2]["tokens"]);
  // The same adapter on the Hugging Face folder (q/k rows in their own order): the same text.
  const json hf = generate(test::shared_dir() / "models/stories260K", true);
  EXPECT_EQ(hf["tokens"], mine["tokens"]);

  // The same adapter exported to PEFT and applied to the Hugging Face folder (q/k in their own
  // row order): the same text again.
  const auto peft = tmp / "peft";
  e = test::run_lora({"export", "--adapter-path", adapter.string(), "--to", "peft", "--out",
                      peft.string(), "--model", gguf("f32").string()});
  ASSERT_EQ(e.exit_code, 0) << e.err;
  auto p = test::run_lora({"--json", "generate", "--model",
                           (test::shared_dir() / "models/stories260K").string(), "--adapter-path",
                           peft.string(), "--prompt", "Once upon a time", "--max-tokens", "40"});
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_EQ(json::parse(p.out)["tokens"], mine["tokens"]);

  expect_record_losses_match(tmp.path(), adapter, file);

  // A type llama.cpp does not have: refused before anything is written.
  m = test::run_lora({"merge", "--model", gguf("f32").string(), "--adapter-path", adapter.string(),
                      "--out", (tmp / "k.gguf").string(), "--outtype", "q3_k_xl"});
  EXPECT_NE(m.exit_code, 0);
  EXPECT_NE(m.err.find("q3_k_xl"), std::string::npos) << m.err;
  EXPECT_FALSE(std::filesystem::exists(tmp / "k.gguf"));
}

}  // namespace
}  // namespace lora
