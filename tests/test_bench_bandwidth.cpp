// bench/stream_triad, on small arrays: it reports the triad and the read-only pass that
// bench/generate_bench.py divides decode's bytes by, each from its own timed passes.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "support/test_support.h"

namespace lora {
namespace {

TEST(BenchBandwidth, StreamTriadReportsTheTriadAndAReadOnlyPass) {
  const auto r = test::run_program({"env", "OMP_NUM_THREADS=1",
                                    std::string(LORA_BINARY_DIR) + "/bench/stream_triad", "--mib",
                                    "8", "--reps", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["threads"], 1);
  for (const char* key : {"gbps", "read_gbps"}) {
    ASSERT_EQ(j[key].size(), 3u) << key;  // the warm-up pass of each is not reported
    for (const auto& v : j[key]) EXPECT_GT(v.get<double>(), 0.0) << key;
  }
  EXPECT_GT(j["read_median_gbps"].get<double>(), 0.0);
  EXPECT_GE(j["read_best_gbps"].get<double>(), j["read_median_gbps"].get<double>());
  EXPECT_NE(r.err.find("read only: median"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace lora
