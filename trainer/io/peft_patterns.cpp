#define PCRE2_CODE_UNIT_WIDTH 8
#include "trainer/io/peft_patterns.h"

#include <pcre2.h>

#include <memory>
#include <optional>
#include <stdexcept>
#include <vector>

namespace lora {

using nlohmann::ordered_json;

namespace {

struct CodeDeleter {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
struct MatchDataDeleter {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};

struct PatternEntry {
  std::string key;
  double value = 0;
};

std::vector<PatternEntry> pattern_entries(const ordered_json& config, const char* field,
                                          const std::string& file) {
  std::vector<PatternEntry> entries;
  auto it = config.find(field);
  if (it == config.end() || it->is_null()) return entries;
  if (!it->is_object()) throw std::runtime_error(file + ": \"" + field + "\" is not an object");
  for (const auto& [key, value] : it->items()) {
    if (!value.is_number())
      throw std::runtime_error(file + ": " + field + "[\"" + key + "\"] is " + value.dump() +
                               ", not a number");
    entries.push_back({key, value.get<double>()});
  }
  return entries;
}

// PEFT >= 0.14: one map at a time, the first key matching as (.*\.)?(K)$.
std::optional<double> current_lookup(const std::vector<PatternEntry>& entries,
                                     const std::string& module, const std::string& where) {
  for (const auto& e : entries)
    if (python_re_match("(.*\\.)?(" + e.key + ")$", module, where + "[\"" + e.key + "\"]"))
      return e.value;
  return std::nullopt;
}

std::optional<double> exact(const std::vector<PatternEntry>& entries, const std::string& key) {
  for (const auto& e : entries)
    if (e.key == key) return e.value;
  return std::nullopt;
}

}  // namespace

bool python_re_match(const std::string& pattern, const std::string& text,
                     const std::string& where) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  // re.match anchors at the start only; `$` (outside MULTILINE) is the end or before a final
  // newline, as PCRE2's default `$`. Python's str patterns are Unicode-aware (UTF + UCP).
  std::unique_ptr<pcre2_code, CodeDeleter> code(
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                    PCRE2_ANCHORED | PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr));
  if (!code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    throw std::runtime_error(where + ": \"" + pattern + "\" is not a regular expression (" +
                             reinterpret_cast<const char*>(message) + ")");
  }
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> match(
      pcre2_match_data_create_from_pattern(code.get(), nullptr));
  const int rc = pcre2_match(code.get(), reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0,
                             0, match.get(), nullptr);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) throw std::runtime_error(where + ": matching \"" + pattern + "\" failed");
  return true;
}

PeftRankAlpha peft_rank_alpha(const ordered_json& config, const std::string& module, double r,
                              double lora_alpha, const std::string& file) {
  const auto ranks = pattern_entries(config, "rank_pattern", file);
  const auto alphas = pattern_entries(config, "alpha_pattern", file);
  if (ranks.empty() && alphas.empty()) return {r, lora_alpha};

  const PeftRankAlpha now{
      current_lookup(ranks, module, file + ": rank_pattern").value_or(r),
      current_lookup(alphas, module, file + ": alpha_pattern").value_or(lora_alpha)};

  std::string target = module;
  bool found = false;
  for (const auto* list : {&ranks, &alphas}) {
    for (const auto& e : *list) {
      if (python_re_match(".*\\." + e.key + "$", module, file + ": pattern \"" + e.key + "\"")) {
        target = e.key;
        found = true;
        break;
      }
    }
    if (found) break;
  }
  const PeftRankAlpha before{exact(ranks, target).value_or(r),
                             exact(alphas, target).value_or(lora_alpha)};
  if (now.rank != before.rank || now.alpha != before.alpha)
    throw std::runtime_error(
        file + ": rank_pattern/alpha_pattern give " + module +
        " r=" + ordered_json(now.rank).dump() + ", lora_alpha=" + ordered_json(now.alpha).dump() +
        " as PEFT 0.14 and later match them, but r=" + ordered_json(before.rank).dump() +
        ", lora_alpha=" + ordered_json(before.alpha).dump() +
        " as PEFT 0.13 and earlier do; refusing an adapter whose scale depends on the PEFT "
        "version (name the modules in full in both maps)");
  return now;
}

}  // namespace lora
