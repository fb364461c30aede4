// The template engine beyond the reference corpus: error locations, the sandbox's limits,
// malformed templates (clear errors, never a crash), the Python-Jinja features the reference
// renderer lacks, and render_chat's context.
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "data/chat_template.h"
#include "data/jinja/jinja_builtins.h"
#include "data/jinja/jinja_parser.h"
#include "data/tokenizer/tokenizer.h"
#include "support/test_support.h"

namespace lora::data {
namespace {

using Json = nlohmann::ordered_json;

std::string render(const std::string& source, const Json& context = Json::object()) {
  return ChatTemplate::parse(source, "t").render(context);
}

// The message of the error that parsing or rendering `source` raises ("" when none does).
std::string error_of(const std::string& source, const Json& context = Json::object()) {
  try {
    render(source, context);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

// Renders with the engine directly, under the given limits; returns the error message.
std::string error_under(const std::string& source, const jinja::Limits& limits) {
  try {
    const jinja::Program program = jinja::parse_template(source);
    jinja::Scope globals;
    jinja::install_globals(globals);
    jinja::Interpreter interpreter(limits);
    interpreter.render(program, globals);
  } catch (const jinja::TemplateError& e) {
    return e.what();
  }
  return "";
}

TEST(JinjaErrors, NameTheLineAndColumn) {
  EXPECT_EQ(error_of("line one\n{% if x %}\n  {{ 1 + }}\n{% endif %}"), "t:3:10: unexpected '}}'");
  EXPECT_EQ(error_of("a\nb {% for m in messages %}\n{{ m }}"),
            "t:2:3: missing {% endfor %} or {% else %} for the for loop opened here");
  EXPECT_EQ(error_of("{{ 'x' }}\n\n   {{ raise_exception('roles must alternate') }}"),
            "t:3:7: raise_exception: roles must alternate");
  EXPECT_EQ(error_of("\n{{ none + 1 }}"), "t:2:9: cannot apply '+' to none");
}

TEST(JinjaErrors, RuntimeErrorsPointAtTheExpression) {
  // Line 3 holds the failing filter; its column is where the filter's name starts.
  const std::string msg =
      error_of("{% for m in messages %}\n{{ m.role }}\n{{ m.role | nope }}\n{% endfor %}",
               Json{{"messages", Json::array({Json{{"role", "user"}}})}});
  EXPECT_EQ(msg, "t:3:13: unknown filter 'nope'");
}

TEST(JinjaErrors, UnsupportedStatementsAreRefusedByName) {
  EXPECT_EQ(error_of("{% include 'other.jinja' %}"),
            "t:1:4: the 'include' statement is not supported in chat templates");
  EXPECT_EQ(error_of("{% extends 'base' %}"),
            "t:1:4: the 'extends' statement is not supported in chat templates");
}

TEST(JinjaSandbox, BoundsLoopIterations) {
  jinja::Limits limits;
  limits.max_iterations = 1000;
  const std::string nested =
      "{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}";
  EXPECT_NE(error_under(nested, limits).find("more than 1000 loop iterations"), std::string::npos);
  limits.max_iterations = 10100;  // 100 outer + 100 x 100 inner
  EXPECT_EQ(error_under(nested, limits), "");
  EXPECT_NE(error_of("{{ range(100000000000) }}").find("item limit"), std::string::npos);
  EXPECT_NE(error_of("{% for i in range(10000000) %}{% endfor %}").find("item limit"),
            std::string::npos);
}

TEST(JinjaSandbox, BoundsRecursion) {
  const std::string msg = error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  EXPECT_NE(msg.find("recursion too deep"), std::string::npos) << msg;
}

TEST(JinjaSandbox, BoundsStringGrowth) {
  const std::string doubling =
      "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
      "{% endfor %}{{ ns.s|length }}";
  jinja::Limits limits;
  limits.max_output_bytes = 1 << 16;
  EXPECT_NE(error_under(doubling, limits).find("65536-byte limit"), std::string::npos);
  EXPECT_NE(error_under("{{ 'ab'|indent(100000, true) }}", limits).find("byte limit"),
            std::string::npos);
  EXPECT_NE(
      error_under("{% for i in range(100000) %}xxxxxxxx{% endfor %}", limits).find("byte limit"),
      std::string::npos);
}

TEST(JinjaSandbox, BoundsParseNesting) {
  for (const std::string open : {"(", "[", "{'a': ", "not ", "- "}) {
    std::string deep = "{{ ";
    for (int i = 0; i < 5000; ++i) deep += open;
    deep += "1";
    const std::string msg = error_of(deep);
    EXPECT_NE(msg.find("nests too deeply"), std::string::npos) << open << ": " << msg;
  }
  std::string blocks;
  for (int i = 0; i < 5000; ++i) blocks += "{% if true %}";
  EXPECT_NE(error_of(blocks).find("nests too deeply"), std::string::npos);
  // Moderate nesting, as real templates use, is fine.
  std::string ok = "{{ ";
  for (int i = 0; i < 50; ++i) ok += "(";
  ok += "7";
  for (int i = 0; i < 50; ++i) ok += ")";
  EXPECT_EQ(render(ok + " }}"), "7");
}

TEST(JinjaSandbox, SelfReferencingNamespaceIsNotACrashOrLeak) {
  EXPECT_EQ(render("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns.me.me.me is defined }}"),
            "true");
  EXPECT_NE(
      error_of("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}").find("nests too deeply"),
      std::string::npos);
}

TEST(JinjaSandbox, CallerCannotOutliveItsBlock) {
  const std::string msg = error_of(
      "{% set ns = namespace() %}{% macro m() %}{% set ns.c = caller %}{% endmacro %}"
      "{% call m() %}x{% endcall %}{{ ns.c() }}");
  EXPECT_NE(msg.find("caller() used outside its call block"), std::string::npos) << msg;
}

TEST(JinjaSandbox, ContextMustBeAnObject) {
  EXPECT_THROW(ChatTemplate::parse("x").render(Json::array()), std::runtime_error);
  Json deep = 1;
  for (int i = 0; i < 600; ++i) deep = Json::array({deep});
  EXPECT_NE(error_of("{{ x }}", Json{{"x", deep}}).find("nests too deeply"), std::string::npos);
}

// Truncations and single-character deletions of real templates: each either renders or fails
// with a runtime_error; under ASan/UBSan this also shows there is no memory error.
TEST(JinjaMalformed, MutatedRealTemplatesFailCleanly) {
  std::vector<std::string> sources;
  for (const char* dir : {"qwen3", "llama3", "llama3_1", "gemma3", "llama2-tinyllama"}) {
    const auto path = test::shared_dir() / "tokenizers" / dir;
    if (!std::filesystem::exists(path / "tokenizer_config.json")) continue;
    if (auto t = TokenizerConfig::load(path).chat_template) sources.push_back(*t);
  }
  if (sources.empty())
    LORA_MISSING_REFERENCE("shared tokenizers missing under " << test::shared_dir());
  const Json context = {{"messages", Json::array({Json{{"role", "system"}, {"content", "s"}},
                                                  Json{{"role", "user"}, {"content", "u"}},
                                                  Json{{"role", "assistant"}, {"content", "a"}}})},
                        {"add_generation_prompt", true},
                        {"bos_token", "<s>"}};
  int rendered = 0, refused = 0;
  const auto attempt = [&](const std::string& source) {
    try {
      ChatTemplate::parse(source, "m").render(context);
      ++rendered;
    } catch (const std::runtime_error& e) {
      EXPECT_EQ(std::string(e.what()).rfind("m:", 0), 0u) << e.what();
      ++refused;
    }
  };
  for (const auto& source : sources) {
    for (std::size_t cut = 0; cut < source.size(); cut += 37) attempt(source.substr(0, cut));
    for (std::size_t at = 0; at < source.size(); at += 47) {
      std::string s = source;
      s.erase(at, 1);
      attempt(s);
    }
    for (std::size_t at = 0; at < source.size(); at += 89) {
      for (const char* insert : {"{%", "}}", "(", "'", "-", "|"}) {
        std::string s = source;
        s.insert(at, insert);
        attempt(s);
      }
    }
  }
  EXPECT_GT(rendered, 100);
  EXPECT_GT(refused, 100);
}

TEST(JinjaMalformed, OddInputsFailCleanly) {
  for (const std::string& source : std::vector<std::string>{"{{",
                                                            "{%",
                                                            "{#",
                                                            "{{ }}",
                                                            "{% %}",
                                                            "{%- -%}",
                                                            "{{ 'a' ",
                                                            "{{ \"\\",
                                                            "{{ '\\u12' }}",
                                                            "{% for %}",
                                                            "{% for x in y %}",
                                                            "{% macro %}",
                                                            "{% macro f( %}",
                                                            "{% set %}",
                                                            "{% set x %}",
                                                            "{% call %}",
                                                            "{% filter %}",
                                                            "{{ a[ }}",
                                                            "{{ a[1:2:3:4] }}",
                                                            "{{ a. }}",
                                                            "{{ a.1.5 }}",
                                                            "{{ f(a=1, 2) }}",
                                                            "{{ f(**a, b) }}",
                                                            "{{ x is }}",
                                                            "{{ 99999999999999999999 }}",
                                                            "{{ {'a' 1} }}",
                                                            "{% if true %}{% elif %}{% endif %}",
                                                            "{% endfor %}",
                                                            "{% else %}",
                                                            "{{ 1 if }}",
                                                            std::string("{{ '\0' }}", 9),
                                                            "\xff\xfe{{ '\xc3' }}",
                                                            "{{ \xe2\x80\x8b }}",
                                                            "{% break %}",
                                                            "{{ -9223372036854775807 - 2 }}",
                                                            "{{ 2 ** 64 }}",
                                                            "{{ 1 // 0 }}",
                                                            "{{ 5 % 0 }}",
                                                            "{{ [1][::0] }}",
                                                            "{{ range(1, 2, 0) }}",
                                                            "{{ 'a' * 3 }}"}) {
    try {
      render(source);
    } catch (const std::runtime_error& e) {
      EXPECT_EQ(std::string(e.what()).rfind("t", 0), 0u) << e.what();
    }
  }
}

// What Python's Jinja supports and the reference renderer does not: we follow Python there.
TEST(JinjaExtensions, PythonJinjaFeatures) {
  EXPECT_EQ(render("{{ 12 is divisibleby 3 }} {{ 7 is divisibleby(2) }} {{ 2 is in [1, 2] }}"),
            "true false true");
  EXPECT_EQ(render("{{ [1, 2, 3, 4]|select('odd')|list }} {{ [1, 2, 3]|reject('even')|list }}"),
            "[1, 3] [1, 3]");
  EXPECT_EQ(render("{{ ['a', 'b']|map('upper')|join }} {{ 3.14159|round(2) }} {{ 2.5|round }}"),
            "AB 3.14 3.0");
  EXPECT_EQ(render("{{ 'a-b-c'.rsplit('-', 1) }} {{ 'hello'.find('l') }} {{ 'hello'.count('l') }}"),
            "[\"a-b\", \"c\"] 2 2");
  EXPECT_EQ(render("{{ '{} and {name}'.format(1, name='x') }} {{ ', '.join(['a', 'b']) }}"),
            "1 and x a, b");
  EXPECT_EQ(render("{{ [3, 1, 2]|max }} {{ [3, 1, 2]|min }} {{ [1, 2, 3]|sum }} {{ 'abc'|last }}"),
            "3 1 6 c");
  EXPECT_EQ(render("{{ x|d('dflt') }} {{ x|default }}|{{ none|string }} {{ 'ab'|list }}"),
            "dflt |None [\"a\", \"b\"]");
  EXPECT_EQ(render("{% for c in 'ab' %}{{ c }}.{% endfor %} {{ dict(a=1) }}"), "a.b. {\"a\": 1}");
  EXPECT_EQ(render("{{ ' x '|trim('x ') }}|{{ 'xax'|trim('x') }}"), "|a");
}

TEST(JinjaExtensions, StrftimeNowFormatsTheCurrentDate) {
  const std::string s = render("{{ strftime_now('%Y-%m-%d %%') }}");
  ASSERT_EQ(s.size(), 12u) << s;
  EXPECT_EQ(s.substr(4, 1), "-");
  EXPECT_EQ(s.substr(10), " %");
  EXPECT_GE(std::stoi(s.substr(0, 4)), 2024);
}

TEST(RenderChat, BuildsTheTransformersContext) {
  TokenizerConfig config;
  config.bos_token = "<s>";
  config.eos_token = "</s>";
  config.pad_token = "";  // empty tokens are left out, as transformers.js does
  const auto t = ChatTemplate::parse(
      "{{ tools is defined }} {{ tools is none }} {{ documents is none }} {{ bos_token }}"
      "{{ eos_token }} {{ pad_token is defined }} {{ unk_token is defined }} "
      "{{ add_generation_prompt }} {{ enable_thinking }} {{ messages|length }}");
  const Json messages = Json::array({Json{{"role", "user"}, {"content", "hi"}}});
  EXPECT_EQ(render_chat(t, config, messages, true, Json{{"enable_thinking", false}}),
            "true true true <s></s> false false true false 1");
  // Extra keyword arguments win over the built-in variables.
  EXPECT_EQ(render_chat(t, config, messages, false, Json{{"bos_token", "B"}}).substr(15, 5),
            "B</s>");
  EXPECT_THROW(render_chat(t, config, messages, false, Json::array()), std::runtime_error);
}

TEST(RenderChat, KeepsKeyOrderOfMessages) {
  const auto t = ChatTemplate::parse(
      "{% for k, v in messages[0]|items %}{{ k }},{% endfor %}{{ messages|tojson }}");
  const Json messages = Json::parse(R"([{"z": 1, "role": "user", "a": [2.0, 0.5]}])");
  EXPECT_EQ(render_chat(t, TokenizerConfig{}, messages, false),
            "z,role,a,[{\"z\": 1, \"role\": \"user\", \"a\": [2, 0.5]}]");
}

TEST(RenderChat, IsDeterministicAcrossThreads) {
  const auto t = ChatTemplate::parse(
      "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
      "<{{ m.role }}>{{ m.content|trim }}{% endfor %}{{ ns.n }}");
  const Json messages =
      Json::parse(R"([{"role": "user", "content": " a "}, {"role": "assistant", "content": "b"}])");
  const std::string expected = render_chat(t, TokenizerConfig{}, messages, false);
  EXPECT_EQ(expected, "<user>a<assistant>b2");
  std::vector<std::string> results(4);
  std::vector<std::thread> threads;
  for (auto& r : results)
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) r = render_chat(t, TokenizerConfig{}, messages, false);
    });
  for (auto& th : threads) th.join();
  for (const auto& r : results) EXPECT_EQ(r, expected);
}

}  // namespace
}  // namespace lora::data
