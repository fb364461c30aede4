// `lora serve` driven by real clients: the openai npm package (tests/clients/serve_test.mjs) and
// headless Chromium on the page at / (tests/clients/page_test.mjs), over adapters trained here.
// The clients come from `npm ci` in tests/clients (scripts/setup.sh --test runs it).
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <tuple>

#include "support/test_support.h"
#include "train_fixtures.h"

namespace lora::test {
namespace {

namespace fs = std::filesystem;

const fs::path kClients = fs::path(LORA_SOURCE_DIR) / "tests/clients";

bool have_clients() {
  return fs::exists(kClients / "node_modules/openai/package.json") &&
         run_program({"node", "--version"}).exit_code == 0;
}

#define REQUIRE_CLIENTS()                                                 \
  do {                                                                    \
    LORA_REQUIRE_SHARED(kStoriesModel);                                   \
    if (!have_clients())                                                  \
      LORA_MISSING_REFERENCE(                                             \
          "node or tests/clients/node_modules missing (scripts/setup.sh " \
          "--test runs npm ci there)");                                   \
  } while (0)

// Two adapters trained for a few steps (different learning rates, so they differ), a DoRA one,
// and a symlink inside the adapter folder that leads out of it.
class ServeClients : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!have_shared(kStoriesModel) || !have_clients()) return;  // each test skips or fails
    tmp_ = std::make_unique<TempDir>("serve");
    make_story_data(*tmp_ / "data");
    const fs::path adapters = *tmp_ / "adapters";
    for (const auto& [name, lr, type] :
         {std::tuple{"a1", "1e-2", "lora"}, std::tuple{"a2", "3e-2", "lora"},
          std::tuple{"d1", "1e-2", "dora"}}) {
      auto r = run_lora({"-q",
                         "--threads",
                         "1",
                         "train",
                         "--model",
                         (shared_dir() / kStoriesModel).string(),
                         "--data",
                         (*tmp_ / "data").string(),
                         "--adapter-path",
                         (adapters / name).string(),
                         "--iters",
                         "8",
                         "--batch-size",
                         "4",
                         "--max-seq-length",
                         "64",
                         "--learning-rate",
                         lr,
                         "--num-layers",
                         "5",
                         "--steps-per-eval",
                         "0",
                         "--save-every",
                         "0",
                         "--fine-tune-type",
                         type});
      ASSERT_EQ(r.exit_code, 0) << r.err;
    }
    fs::copy(adapters / "a1", *tmp_ / "outside");
    fs::create_directory_symlink(*tmp_ / "outside", adapters / "escape");
  }
  static void TearDownTestSuite() { tmp_.reset(); }

  static CommandResult run_client(const std::string& script) {
    setenv("LORA_BIN", (fs::path(LORA_BINARY_DIR) / "lora").c_str(), 1);
    setenv("LORA_MODEL", (shared_dir() / kStoriesModel).c_str(), 1);
    setenv("ADAPTERS", (*tmp_ / "adapters").c_str(), 1);
    setenv("OUT_DIR", (fs::path(LORA_SOURCE_DIR) / "out/serve").c_str(), 1);
    return run_program({"node", (kClients / script).string()});
  }

  static inline std::unique_ptr<TempDir> tmp_;
};

TEST_F(ServeClients, OpenAIClientCompletionsChatAdaptersAndErrors) {
  REQUIRE_CLIENTS();
  const CommandResult r = run_client("serve_test.mjs");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("all passed"), std::string::npos) << r.out << r.err;
}

TEST_F(ServeClients, PageComparesBaseAndAdapterInHeadlessChromium) {
  REQUIRE_CLIENTS();
  if (!fs::exists("/usr/bin/chromium"))
    LORA_MISSING_REFERENCE("/usr/bin/chromium missing (scripts/setup.sh --test installs it)");
  const CommandResult r = run_client("page_test.mjs");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(fs::exists(fs::path(LORA_SOURCE_DIR) / "out/serve/page.png")) << r.out;
}

}  // namespace
}  // namespace lora::test
