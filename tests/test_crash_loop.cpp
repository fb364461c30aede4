// The crash loop (scripts/crash_loop.sh) in its short form: one run killed with SIGKILL three
// times at random moments and resumed each time; no checkpoint folder is ever left half-written,
// and every run that reaches its end writes an adapter bit-identical to an uninterrupted run's.
#include <gtest/gtest.h>

#include "support/test_support.h"
#include "train_fixtures.h"

namespace lora::test {
namespace {

TEST(CrashLoop, ThreeKillsThreeResumesSameAdapter) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  // One seed: the script's long form (20 kills) is the thorough one; under the sanitizers each
  // seed costs about 55 s of the suite's time.
  auto r = run_program({"env", "LORA_BIN=" + lora_bin(), "LORA_SHARED=" + shared_dir().string(),
                        std::string(LORA_SOURCE_DIR) + "/scripts/crash_loop.sh", "3", "1"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("3 kills, 3 resumes over "), std::string::npos) << r.out << r.err;
  EXPECT_NE(r.out.find("every final adapter is bit-identical, no checkpoint folder was ever "
                       "half-written"),
            std::string::npos)
      << r.out << r.err;
}

}  // namespace
}  // namespace lora::test
