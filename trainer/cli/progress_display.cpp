#include "trainer/cli/progress_display.h"

#include <unistd.h>

#include <cmath>

namespace lora::cli {

ProgressMode choose_progress_mode(bool quiet, bool json) {
  if (json) return ProgressMode::json;
  if (quiet) return ProgressMode::quiet;
  return ::isatty(STDOUT_FILENO) ? ProgressMode::bar : ProgressMode::lines;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

ProgressDisplay::ProgressDisplay(ProgressMode mode, int64_t total_steps, int64_t first_step,
                                 std::FILE* out)
    : mode_(mode),
      total_(total_steps),
      first_(first_step),
      out_(out),
      start_(std::chrono::steady_clock::now()) {}

double ProgressDisplay::tokens_per_second() const {
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return t > 0 ? double(tokens_) / t : 0.0;
}

double ProgressDisplay::eta_seconds(int64_t step) const {
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int64_t done = step - first_;
  return done > 0 ? t / double(done) * double(total_ - step) : NAN;
}

void ProgressDisplay::clear_bar() {
  if (bar_shown_) {
    std::fputs("\r\033[2K", out_);
    bar_shown_ = false;
  }
}

void ProgressDisplay::step(int64_t step, float loss, float lr, int64_t tokens) {
  tokens_ += tokens;
  if (mode_ != ProgressMode::bar) return;
  constexpr int kWidth = 24;
  const int filled = total_ > 0 ? int(kWidth * step / total_) : 0;
  std::string bar(std::size_t(filled), '#');
  bar.resize(kWidth, '.');
  std::fprintf(out_, "\r\033[2K[%s] %lld/%lld loss %.4f lr %.2e %.0f tok/s ETA %s", bar.c_str(),
               static_cast<long long>(step), static_cast<long long>(total_), double(loss),
               double(lr), tokens_per_second(), format_duration(eta_seconds(step)).c_str());
  std::fflush(out_);
  bar_shown_ = true;
}

void ProgressDisplay::record(const nlohmann::ordered_json& r) {
  if (mode_ == ProgressMode::quiet) return;
  if (mode_ == ProgressMode::json) {
    std::fprintf(out_, "%s\n", r.dump().c_str());
    std::fflush(out_);
    return;
  }
  clear_bar();
  const std::string type = r.value("type", "");
  const long long step = r.value("step", int64_t(0));
  if (type == "train") {
    std::fprintf(
        out_, "step %lld/%lld: train loss %.4f, lr %.3e, %.0f tok/s, %lld trained tokens, ETA %s\n",
        step, static_cast<long long>(total_), r.value("loss", 0.0), r.value("lr", 0.0),
        r.value("tokens_per_sec", 0.0),
        static_cast<long long>(r.value("trained_tokens", int64_t(0))),
        format_duration(eta_seconds(step)).c_str());
  } else {
    std::fprintf(out_, "step %lld/%lld: %s loss %.4f, perplexity %.3f (%.1fs)\n", step,
                 static_cast<long long>(total_), type.c_str(), r.value("loss", 0.0),
                 r.value("perplexity", 0.0), r.value("seconds", 0.0));
  }
  std::fflush(out_);
}

void ProgressDisplay::note(const std::string& text) {
  if (mode_ == ProgressMode::quiet || mode_ == ProgressMode::json) return;
  clear_bar();
  std::fprintf(out_, "%s\n", text.c_str());
  std::fflush(out_);
}

void ProgressDisplay::finish() { clear_bar(); }

}  // namespace lora::cli
