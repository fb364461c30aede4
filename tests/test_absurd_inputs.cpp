// Inputs that are large on purpose are refused or bounded before any big allocation: a config
// with absurd dimensions, a tokenizer.json with millions of merges, templates that recurse or
// loop without end, and a JSONL file of hundreds of MB read as a stream.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "data/chat_template.h"
#include "data/dataset.h"
#include "data/tokenizer/tokenizer.h"
#include "support/test_support.h"
#include "train_fixtures.h"
#include "trainer/model_config.h"

namespace lora::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The message of the std::exception `f` throws ("" when it returns).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// The peak resident set of this process, in MiB.
double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;
}

json llama_config() {
  return {{"model_type", "llama"},  {"hidden_size", 64},        {"intermediate_size", 172},
          {"num_hidden_layers", 5}, {"num_attention_heads", 8}, {"num_key_value_heads", 4},
          {"vocab_size", 512}};
}

TEST(AbsurdInputs, ConfigDimensionsAreBounded) {
  EXPECT_EQ(error_of([] { ModelConfig::from_json(llama_config()); }), "");
  for (const char* key : {"hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "vocab_size", "max_position_embeddings"}) {
    json j = llama_config();
    j[key] = int64_t(1'000'000'000'000);
    const std::string msg = error_of([&] { ModelConfig::from_json(j); });
    EXPECT_NE(msg.find(std::string("\"") + key + "\" is 1000000000000, beyond"), std::string::npos)
        << msg;
  }
}

// A model folder whose config says hidden_size 10^9: `lora train` refuses it at once, naming the
// file and the field, before reading weights or sizing anything from it.
TEST(AbsurdInputs, TrainRefusesAnAbsurdConfigAtOnce) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("absurd");
  fs::create_directories(tmp / "model");
  for (const char* f : {"model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(shared_dir() / kStoriesModel / f, tmp / "model" / f);
  json config = json::parse(read_file(shared_dir() / kStoriesModel / "config.json"));
  config["hidden_size"] = 1'000'000'000;
  write_file(tmp / "model/config.json", config.dump());
  make_story_data(tmp / "data");
  const auto t0 = std::chrono::steady_clock::now();
  auto r = run_lora({"train", "--model", (tmp / "model").string(), "--data",
                     (tmp / "data").string(), "--adapter-path", (tmp / "out").string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("config.json"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("\"hidden_size\" is 1000000000"), std::string::npos) << r.err;
  EXPECT_LT(seconds_since(t0), 20.0);
  EXPECT_FALSE(fs::exists(tmp / "out"));
}

// 2.5 million merges (the limit is 2^21): refused while reading, in bounded time.
TEST(AbsurdInputs, TokenizerWithMillionsOfMergesIsRefused) {
  TempDir tmp("absurd");
  {
    std::ofstream f(tmp / "tokenizer.json", std::ios::binary);
    f << R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [)";
    for (int i = 0; i < 2'500'000; ++i) f << (i ? "," : "") << "\"a b\"";
    f << "]}}";
  }
  const auto t0 = std::chrono::steady_clock::now();
  const std::string msg = error_of([&] { data::Tokenizer::load(tmp / "tokenizer.json"); });
  EXPECT_NE(msg.find("model.merges: more than 2097152 merges"), std::string::npos) << msg;
  EXPECT_LT(seconds_since(t0), 60.0);
}

// The chat template path the trainer uses runs under the sandbox's default limits: a template
// that recurses, loops 10^10 times or doubles a string 64 times stops with an error naming the
// limit.
TEST(AbsurdInputs, TemplatesThatRecurseOrLoopStop) {
  const data::TokenizerConfig config;
  const auto messages = nlohmann::ordered_json::parse(R"([{"role": "user", "content": "hi"}])");
  auto render = [&](const std::string& source) {
    return error_of(
        [&] { data::render_chat(data::ChatTemplate::parse(source, "t"), config, messages, true); });
  };
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_NE(render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").find("recursion"),
            std::string::npos);
  EXPECT_NE(render("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}")
                .find("loop iterations"),
            std::string::npos);
  EXPECT_NE(render("{% set ns = namespace(s='x') %}{% for i in range(64) %}"
                   "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}")
                .find("byte limit"),
            std::string::npos);
  EXPECT_LT(seconds_since(t0), 60.0);
}

// A 512 MB file of one line (sparse: no disk is used) is refused at the line cap, having held at
// most the cap; a pipe that streams 256 MB of blank lines (4 KB each) and then a record is read
// with flat memory. Both are read as streams, never whole.
TEST(AbsurdInputs, HugeJsonlIsReadAsAStream) {
  TempDir tmp("absurd");
  const fs::path sparse = tmp / "huge.jsonl";
  { std::ofstream f(sparse); }
  fs::resize_file(sparse, uint64_t(512) << 20);
  data::ReadOptions options;
  options.max_line_bytes = 4 << 20;
  const double before = peak_rss_mib();
  const std::string msg = error_of([&] { data::read_jsonl(sparse, options); });
  EXPECT_NE(msg.find("huge.jsonl:1: line is longer than 4194304 bytes"), std::string::npos) << msg;

  const fs::path fifo = tmp / "pipe.jsonl";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::thread writer([&] {
    std::ofstream f(fifo, std::ios::binary);
    std::string blank_line(4095, ' ');
    blank_line += '\n';
    for (int i = 0; i < 65536; ++i) f.write(blank_line.data(), std::streamsize(blank_line.size()));
    f << "{\"text\": \"the end\"}\n";
  });
  std::vector<data::Record> records;
  const std::string pipe_error = error_of([&] { records = data::read_jsonl(fifo, options); });
  writer.join();
  EXPECT_EQ(pipe_error, "");
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].text, "the end");
  EXPECT_EQ(records[0].line, 65537u);
  // The cap's buffer, not the inputs' 768 MB (slack for the allocator).
  EXPECT_LT(peak_rss_mib() - before, 64.0);
}

}  // namespace
}  // namespace lora::test
