// PEFT's per-module rank and alpha: `rank_pattern` and `alpha_pattern` map regular expressions
// to values, tried against the module's name ("model.layers.3.self_attn.q_proj") in the order the
// config file lists them. PEFT has matched them two ways:
//   0.14 and later: each map on its own; the first key K with re.match(r"(.*\.)?(K)$", name)
//     gives the value; without one, r / lora_alpha.
//   up to 0.13: the keys of rank_pattern then alpha_pattern as one list; the first K with
//     re.match(r".*\.K$", name) (else the name itself) is looked up, exactly, in both maps.
// Both are computed; a file on which they disagree is refused rather than read one way.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace lora {

struct PeftRankAlpha {
  double rank = 0;
  double alpha = 0;
};

// `config` is adapter_config.json parsed with its key order kept. `file` names it in errors.
// Throws when a key is not a valid regular expression, a value is not a number, or the two
// PEFT readings give the module different values.
PeftRankAlpha peft_rank_alpha(const nlohmann::ordered_json& config, const std::string& module,
                              double r, double lora_alpha, const std::string& file);

// Whether Python's re.match(pattern, text) matches (anchored at the start of `text` only).
// `where` names the pattern in errors.
bool python_re_match(const std::string& pattern, const std::string& text, const std::string& where);

}  // namespace lora
