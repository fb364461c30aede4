// A setting with a value the library cannot use. The library names settings in its own terms (the
// snake_case keys of TrainOptions, LoadOptions, ... as a config file spells them); the CLI maps
// `setting` to the flag that sets it.
#pragma once
#include <stdexcept>
#include <string>

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

}  // namespace lora
