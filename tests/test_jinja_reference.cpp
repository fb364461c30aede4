// Jinja semantics checked against the reference renderer: tests/jinja_reference/cases.jsonl
// holds templates and what @huggingface/jinja rendered from them (or that it refused them),
// made by tests/jinja_reference/make_cases.mjs.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "data/chat_template.h"

namespace lora::data {
namespace {

struct ReferenceCase {
  std::string name, template_source;
  std::optional<std::string> rendered, error;
};

struct Corpus {
  std::vector<ReferenceCase> cases;
  nlohmann::ordered_json context;
};

const Corpus& corpus() {
  static const Corpus loaded = [] {
    Corpus c;
    std::ifstream in(std::string(LORA_SOURCE_DIR) + "/tests/jinja_reference/cases.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      const auto j = nlohmann::ordered_json::parse(line);
      if (j.at("name") == "__context__") {
        c.context = j.at("context");
        continue;
      }
      ReferenceCase rc{j.at("name"), j.at("template"), std::nullopt, std::nullopt};
      if (j.contains("rendered")) rc.rendered = j.at("rendered").get<std::string>();
      if (j.contains("error")) rc.error = j.at("error").get<std::string>();
      c.cases.push_back(std::move(rc));
    }
    return c;
  }();
  return loaded;
}

TEST(JinjaReference, CorpusIsThere) {
  ASSERT_GE(corpus().cases.size(), 80u);
  ASSERT_TRUE(corpus().context.is_object());
}

TEST(JinjaReference, RendersWhatTheReferenceRenders) {
  int checked = 0;
  for (const auto& c : corpus().cases) {
    if (!c.rendered) continue;
    ++checked;
    try {
      const auto t = ChatTemplate::parse(c.template_source, c.name);
      EXPECT_EQ(t.render(corpus().context), *c.rendered) << c.name << "\n" << c.template_source;
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.name << " threw: " << e.what() << "\n" << c.template_source;
    }
  }
  EXPECT_GE(checked, 60);
}

TEST(JinjaReference, RefusesWhatTheReferenceRefuses) {
  int checked = 0;
  for (const auto& c : corpus().cases) {
    if (!c.error) continue;
    ++checked;
    try {
      const auto t = ChatTemplate::parse(c.template_source, c.name);
      const std::string out = t.render(corpus().context);
      ADD_FAILURE() << c.name << " rendered \"" << out
                    << "\" but the reference failed with: " << *c.error;
    } catch (const std::runtime_error& e) {
      // Every message names the template and the line:column of the problem.
      EXPECT_EQ(std::string(e.what()).rfind(c.name + ":1:", 0), 0u) << e.what();
    }
  }
  EXPECT_GE(checked, 20);
}

}  // namespace
}  // namespace lora::data
