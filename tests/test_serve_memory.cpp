// The server's heap does not grow with the number of requests it has answered: after a warm-up
// (thread pool, connections, caches at their working size), many more completions and chats,
// streamed and not, sampled with new seeds, leave the bytes held through operator new where they
// were (tests/support/heap_counter.h; the allocator's own caches do not count), in this process,
// with the server and its clients on loopback. And a server told to keep its KV caches in halves
// holds half the bytes for a request's cache.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <thread>

#include "support/heap_counter.h"
#include "support/test_support.h"
#include "train_fixtures.h"
#include "trainer/model.h"
#include "trainer/serve/server.h"

namespace lora::test {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// `n` requests from four clients at once, of every kind in turn; returns how many were not
// answered with 200 and a complete body.
int send_requests(int port, int n, int first_seed) {
  std::atomic<int> failed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c)
    clients.emplace_back([&, c] {
      httplib::Client client("127.0.0.1", port);
      for (int i = c; i < n; i += 4) {
        const bool chat = i % 3 == 0, stream = i % 2 == 0;
        json body = {{"model", "base"},        {"max_tokens", 12}, {"temperature", 0.9},
                     {"seed", first_seed + i}, {"stream", stream}, {"stop", json::array({"zzz"})}};
        if (chat)
          body["messages"] = json::array({{{"role", "user"}, {"content", "Tell a story"}}});
        else
          body["prompt"] = "Once upon a time";
        const auto res = client.Post(chat ? "/v1/chat/completions" : "/v1/completions", body.dump(),
                                     "application/json");
        const bool whole = res && res->status == 200 &&
                           (stream ? res->body.find("data: [DONE]") != std::string::npos
                                   : res->body.find("\"usage\"") != std::string::npos);
        if (!whole) ++failed;
      }
    });
  for (auto& t : clients) t.join();
  return failed;
}

TEST(ServeMemory, HeapIsFlatOverManyRequests) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  const Model model = load_model(shared_dir() / kStoriesModel);
  serve::ServeOptions options;
  options.model_dir = shared_dir() / kStoriesModel;
  options.model_name = "base";
  options.scheduler = {.slots = 4, .queue_size = 8, .max_batch = 4};
  serve::Server server(model, options);
  const int port = server.bind("127.0.0.1", 0);
  std::thread listener([&] { server.listen(); });

  ASSERT_EQ(send_requests(port, 200, 0), 0);  // the warm-up
  std::this_thread::sleep_for(200ms);         // the last answers' threads finish their writes
  const int64_t before = heap_counter::live_bytes();
  ASSERT_EQ(send_requests(port, 1000, 100000), 0);
  std::this_thread::sleep_for(200ms);
  const int64_t after = heap_counter::live_bytes();
  server.stop();
  listener.join();
  // 1000 requests: a leak of 16 bytes each would show.
  EXPECT_LT(after - before, 16 << 10) << "live heap " << before << " -> " << after << " bytes";
  std::printf("live heap %lld -> %lld bytes over 1000 requests\n", static_cast<long long>(before),
              static_cast<long long>(after));
}

// One greedy completion of `max_tokens` on a fresh server over `model` with `options`: the largest
// heap it takes (the first request on each server: what else it allocates is the same whatever
// the options), and its text.
struct Completion {
  int64_t peak_bytes = 0;
  std::string text;
};
Completion complete_once(const Model& model, serve::ServeOptions options, int max_tokens) {
  options.model_dir = shared_dir() / kStoriesModel;
  options.model_name = "base";
  serve::Server server(model, options);
  const int port = server.bind("127.0.0.1", 0);
  std::thread listener([&] { server.listen(); });
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(300s);  // a loaded machine (a parallel test run) may be slow
  const json body = {{"model", "base"},
                     {"prompt", "Once upon a time"},
                     {"max_tokens", max_tokens},
                     {"temperature", 0},
                     {"stop", json::array()}};
  const int64_t before = heap_counter::live_bytes();
  heap_counter::reset_peak();
  const auto res = client.Post("/v1/completions", body.dump(), "application/json");
  const int64_t peak = heap_counter::peak_bytes() - before;
  EXPECT_TRUE(res && res->status == 200) << (res ? res->body : "no answer");
  server.stop();
  listener.join();
  if (!res || res->status != 200) return {peak, ""};
  return {peak, json::parse(res->body)["choices"][0]["text"].get<std::string>()};
}

int64_t completion_peak_bytes(KVCacheType kv_cache, int max_tokens) {
  const Model model = load_model(shared_dir() / kStoriesModel);
  serve::ServeOptions options;
  options.kv_cache = kv_cache;
  return complete_once(model, options, max_tokens).peak_bytes;
}

// ServeOptions::kv_cache reaches every request's cache: with halves a long completion's cache
// (stories260K: 1280 bytes a token in f32) takes half the bytes.
TEST(ServeMemory, HalfKvCacheHalvesTheCache) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  completion_peak_bytes(KVCacheType::F32, 400);  // the process's one-time allocations
  const int64_t f32 = completion_peak_bytes(KVCacheType::F32, 400);
  const int64_t f16 = completion_peak_bytes(KVCacheType::F16, 400);
  // The f32 cache of ~405 tokens is ~518 KB, its halves ~259 KB; stories260K's heads (8 floats)
  // are shorter than the vector kernels take, so each step also widens one layer's cache (~104 KB
  // at the end) while it attends.
  EXPECT_GT(f32 - f16, 128 << 10) << "peak " << f32 << " (f32) against " << f16 << " (f16) bytes";
  std::printf("peak heap of a request: %lld bytes with an f32 cache, %lld with f16\n",
              static_cast<long long>(f32), static_cast<long long>(f16));
}

// ServeOptions::decode_activations reaches every request, and int8 is the default: on a 4-bit
// stories260K the 400-token greedy completions with int8 and f32 decode activations part (after
// 165 tokens in `lora generate`'s Release build on the machine this was written on, earlier under
// the sanitizers).
TEST(ServeMemory, DecodeActivationsReachTheRequestsInt8ByDefault) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  const Model model =
      load_model(shared_dir() / kStoriesModel, {.quantize_bits = 4, .quantize_group_size = 32});
  serve::ServeOptions by_default, f32, int8;
  f32.decode_activations = GemvActivations::F32;
  int8.decode_activations = GemvActivations::Int8;
  const std::string a = complete_once(model, f32, 400).text,
                    b = complete_once(model, int8, 400).text;
  ASSERT_GT(a.size(), 400u);
  ASSERT_GT(b.size(), 400u);
  EXPECT_NE(a, b);
  EXPECT_EQ(complete_once(model, by_default, 400).text, b);
}

}  // namespace
}  // namespace lora::test
