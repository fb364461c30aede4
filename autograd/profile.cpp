#include "autograd/profile.h"

#include <algorithm>
#include <cstdio>

namespace lora::ag {

void OpProfile::add(const char* op, OpPhase phase, double seconds) {
  Entry& e = by_op_[op];
  if (e.op.empty()) e.op = op;
  e.seconds[static_cast<int>(phase)] += seconds;
  e.calls[static_cast<int>(phase)] += 1;
}

std::vector<OpProfile::Entry> OpProfile::entries() const {
  std::vector<Entry> out;
  for (const auto& [name, e] : by_op_) out.push_back(e);
  std::stable_sort(out.begin(), out.end(),
                   [](const Entry& a, const Entry& b) { return a.total() > b.total(); });
  return out;
}

double OpProfile::total_seconds() const {
  double t = 0;
  for (const auto& [name, e] : by_op_) t += e.total();
  return t;
}

std::string OpProfile::table() const {
  std::string out;
  char line[160];
  std::snprintf(line, sizeof line, "%-22s %10s %10s %10s %7s\n", "op", "forward s", "recomp s",
                "backward s", "share");
  out += line;
  const double total = total_seconds();
  for (const Entry& e : entries()) {
    std::snprintf(line, sizeof line, "%-22s %10.3f %10.3f %10.3f %6.1f%%\n", e.op.c_str(),
                  e.seconds[0], e.seconds[1], e.seconds[2],
                  total > 0 ? 100.0 * e.total() / total : 0.0);
    out += line;
  }
  std::snprintf(line, sizeof line, "%-22s %43.3f\n", "total", total);
  out += line;
  return out;
}

OpTimer::OpTimer(OpProfile* profile, const char* op, OpPhase phase)
    : profile_(profile), op_(op), phase_(phase) {
  if (!profile_) return;
  profile_->child_seconds_.push_back(0.0);
  start_ = std::chrono::steady_clock::now();
}

OpTimer::~OpTimer() {
  if (!profile_) return;
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double children = profile_->child_seconds_.back();
  profile_->child_seconds_.pop_back();
  profile_->add(op_, phase_, elapsed - children);
  if (!profile_->child_seconds_.empty()) profile_->child_seconds_.back() += elapsed;
}

}  // namespace lora::ag
