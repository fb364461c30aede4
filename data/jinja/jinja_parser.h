// Tokens -> Program, with the grammar and operator precedence of @huggingface/jinja.
#pragma once
#include <string_view>

#include "data/jinja/jinja_ast.h"

namespace lora::data::jinja {

// Deeper nesting than this (brackets, blocks, unary operators) is refused, which keeps hostile
// templates from exhausting the stack.
inline constexpr int kMaxParseDepth = 200;

// Throws TemplateError with the offending token's position.
Program parse_template(std::string_view source);

}  // namespace lora::data::jinja
