#include "trainer/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "trainer/io/atomic_file.h"

namespace lora {

namespace fs = std::filesystem;

MetricsLog::MetricsLog(fs::path dir, std::string history)
    : dir_(std::move(dir)), text_(std::move(history)) {
  if (dir_.empty()) return;
  fs::create_directories(dir_);
  write_file_atomic(dir_ / "metrics.jsonl", text_);
  write_file_atomic(dir_ / "loss_curve.svg", loss_curve_svg(text_));
}

void MetricsLog::append(const nlohmann::ordered_json& record) {
  const std::string line = record.dump() + "\n";
  text_ += line;
  if (dir_.empty()) return;
  {
    // Appending keeps each report O(line); a torn last line is dropped on resume, since the
    // checkpoint carries its own copy of the log.
    std::ofstream f(dir_ / "metrics.jsonl", std::ios::app | std::ios::binary);
    f << line;
  }
  write_file_atomic(dir_ / "loss_curve.svg", loss_curve_svg(text_));
}

std::string loss_curve_svg(const std::string& metrics_jsonl) {
  std::map<std::string, std::vector<std::pair<double, double>>> series;
  std::istringstream in(metrics_jsonl);
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("loss") || !j.contains("step") || !j["loss"].is_number())
      continue;
    const double loss = j["loss"].get<double>();
    if (!std::isfinite(loss)) continue;
    series[j.value("type", "train")].emplace_back(j["step"].get<double>(), loss);
  }
  const double W = 720, H = 400, left = 60, right = 20, top = 30, bottom = 45;
  double x0 = 0, x1 = 1, y0 = 1e300, y1 = -1e300;
  for (const auto& [name, pts] : series)
    for (auto [x, y] : pts) {
      x1 = std::max(x1, x);
      y0 = std::min(y0, y);
      y1 = std::max(y1, y);
    }
  if (y0 > y1) y0 = 0, y1 = 1;
  if (y1 - y0 < 1e-9) y0 -= 0.5, y1 += 0.5;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * (W - left - right); };
  auto py = [&](double y) { return top + (y1 - y) / (y1 - y0) * (H - top - bottom); };
  std::ostringstream s;
  char buf[128];
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << W / 2 << "\" y=\"18\" text-anchor=\"middle\">loss by step</text>\n";
  // Axes with five ticks each.
  s << "<g stroke=\"#888\"><line x1=\"" << left << "\" y1=\"" << H - bottom << "\" x2=\""
    << W - right << "\" y2=\"" << H - bottom << "\"/><line x1=\"" << left << "\" y1=\"" << top
    << "\" x2=\"" << left << "\" y2=\"" << H - bottom << "\"/></g>\n";
  for (int i = 0; i <= 4; ++i) {
    const double xv = x0 + (x1 - x0) * i / 4, yv = y0 + (y1 - y0) * i / 4;
    std::snprintf(buf, sizeof buf, "%.0f", xv);
    s << "<text x=\"" << px(xv) << "\" y=\"" << H - bottom + 16 << "\" text-anchor=\"middle\">"
      << buf << "</text>\n";
    std::snprintf(buf, sizeof buf, "%.3g", yv);
    s << "<text x=\"" << left - 6 << "\" y=\"" << py(yv) + 4 << "\" text-anchor=\"end\">" << buf
      << "</text>\n";
  }
  s << "<text x=\"" << W / 2 << "\" y=\"" << H - 8 << "\" text-anchor=\"middle\">step</text>\n";
  const std::map<std::string, std::string> colors = {
      {"train", "#1f77b4"}, {"val", "#d62728"}, {"test", "#2ca02c"}};
  int legend = 0;
  for (const auto& [name, pts] : series) {
    auto c = colors.count(name) ? colors.at(name) : std::string("#555");
    s << "<polyline fill=\"none\" stroke=\"" << c << "\" stroke-width=\"2\" points=\"";
    for (auto [x, y] : pts) {
      std::snprintf(buf, sizeof buf, "%.1f,%.1f ", px(x), py(y));
      s << buf;
    }
    s << "\"/>\n";
    for (auto [x, y] : pts)
      s << "<circle cx=\"" << px(x) << "\" cy=\"" << py(y) << "\" r=\"2.5\" fill=\"" << c
        << "\"/>\n";
    s << "<text x=\"" << W - right - 60 << "\" y=\"" << top + 14 + 16 * legend++ << "\" fill=\""
      << c << "\">" << name << "</text>\n";
  }
  s << "</svg>\n";
  return s.str();
}

}  // namespace lora
