// The builtins a template can reach: attribute and index access (with the string, list and
// dict methods), filters, tests, and the global functions.
#pragma once
#include <optional>
#include <string>
#include <string_view>

#include "data/jinja/jinja_interpreter.h"

namespace lora::data::jinja {

// object.key / object[key]: dict entries first, then methods; list and string indexes may be
// negative. Missing entries are undefined.
Value get_member(const Value& object, const Value& key);
Value apply_filter(Interpreter& in, std::string_view name, const Value& operand, CallArgs& args,
                   Scope& scope);
bool apply_test(std::string_view name, const Value& operand, const CallArgs& args);
// true/false/none (and the Python spellings), namespace(), range(), raise_exception(),
// strftime_now(), dict().
void install_globals(Scope& globals);

// Shared by the string methods and the filters of the same name.
std::string capitalize(std::string_view s);  // first character upper-cased, the rest kept
// Replaces `from` by `to` (at most `count` times when given); an empty `from` inserts `to`
// around every character.
std::string replace_all(Interpreter& in, std::string_view s, std::string_view from,
                        std::string_view to, std::optional<int64_t> count);
Value dict_items(const Value& dict);  // [[key, value], ...]

}  // namespace lora::data::jinja
