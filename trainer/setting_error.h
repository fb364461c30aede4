// A setting with a value the library cannot use. The library names settings in its own terms (the
// snake_case keys of TrainOptions, LoadOptions, ... as a config file spells them); the CLI maps
// `setting` to the flag that sets it.
#pragma once
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace lora {

class SettingError : public std::invalid_argument {
 public:
  SettingError(const std::string& setting, const std::string& problem)
      : std::invalid_argument(setting + ": " + problem), setting_(setting), problem_(problem) {}
  const std::string& setting() const { return setting_; }  // "learning_rate"
  const std::string& problem() const { return problem_; }  // "must be >= 0"

 private:
  std::string setting_;
  std::string problem_;
};

// A change the library suggests to one setting, in its own names: `value` empty for a switch
// turned on ("grad_checkpoint"), else the new value ("batch_size" to "2").
struct SettingChange {
  std::string setting;
  std::string value;
};
// Changes applied together.
using SettingChanges = std::vector<SettingChange>;

// "setting value" (or "setting" for a switch): how the library spells a change; the CLI passes
// its own speller (the flag) to AdvisedError::message.
std::string spell_setting_change(const SettingChange& change);

// An error whose remedy is a change of settings: the problem, then `lead` and the alternatives
// (each one or more changes) joined as "A, B, or C". what() spells them in the library's names.
class AdvisedError : public std::runtime_error {
 public:
  using Speller = std::function<std::string(const SettingChange&)>;
  AdvisedError(std::string problem, std::string lead, std::vector<SettingChanges> alternatives)
      : std::runtime_error(compose(problem, lead, alternatives, spell_setting_change)),
        problem_(std::move(problem)),
        lead_(std::move(lead)),
        alternatives_(std::move(alternatives)) {}
  const std::vector<SettingChanges>& alternatives() const { return alternatives_; }
  std::string message(const Speller& spell) const {
    return compose(problem_, lead_, alternatives_, spell);
  }

 private:
  static std::string compose(const std::string& problem, const std::string& lead,
                             const std::vector<SettingChanges>& alternatives,
                             const Speller& spell) {
    if (alternatives.empty()) return problem;
    std::string text = problem + lead;
    for (std::size_t i = 0; i < alternatives.size(); ++i) {
      text += i == 0 ? "" : i + 1 == alternatives.size() ? ", or " : ", ";
      for (std::size_t j = 0; j < alternatives[i].size(); ++j)
        text += (j == 0 ? "" : " ") + spell(alternatives[i][j]);
    }
    return text;
  }
  std::string problem_, lead_;
  std::vector<SettingChanges> alternatives_;
};

inline std::string spell_setting_change(const SettingChange& change) {
  return change.value.empty() ? change.setting : change.setting + " " + change.value;
}

}  // namespace lora
