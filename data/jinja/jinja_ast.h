// The parsed form of a template: expressions and statements, each with its source offset.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/jinja/jinja_value.h"

namespace lora::data::jinja {

enum class ExprKind : uint8_t {
  Literal,        // literal
  Name,           // name
  List,           // list
  Tuple,          // list
  Dict,           // list: key, value, key, value, ...
  Attribute,      // a.name
  Index,          // a[b]
  Slice,          // a[list0:list1:list2], absent parts null
  Call,           // a(list)
  Filter,         // a | name(list); a is null in a {% filter %} block
  Test,           // a is [not] name(list); negated = flag
  Unary,          // op a
  Binary,         // a op b
  Ternary,        // b if a else c
  Select,         // a if b (no else: undefined when b is false)
  Keyword,        // name=a, in argument lists
  Spread,         // *a
  KeywordSpread,  // **a
};

enum class Op : uint8_t {
  Add,
  Sub,
  Mul,
  Div,
  FloorDiv,
  Mod,
  Pow,
  Concat,
  Eq,
  Ne,
  Lt,
  Gt,
  Le,
  Ge,
  In,
  NotIn,
  And,
  Or,
  Not,
  Neg,
  Pos,
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  ExprKind kind;
  uint32_t pos = 0;
  Op op = Op::Add;
  bool flag = false;
  Value literal;
  std::string name;
  ExprPtr a, b, c;
  std::vector<ExprPtr> list;
};

enum class StmtKind : uint8_t {
  Text,         // text
  Output,       // {{ expr }}
  If,           // expr, body, orelse (an elif is a nested If in orelse)
  For,          // target in expr [if condition], body, orelse
  Set,          // target = expr
  SetBlock,     // {% set target %}body{% endset %}
  Macro,        // text = name, params, body
  CallBlock,    // {% call(params) expr %}body{% endcall %}
  FilterBlock,  // {% filter expr %}body{% endfilter %}
  Break,
  Continue,
};

struct Stmt {
  StmtKind kind;
  uint32_t pos = 0;
  std::string text;
  ExprPtr expr, target, condition;
  std::vector<Stmt> body, orelse;
  std::vector<ExprPtr> params;  // Name or Keyword (with a default) nodes
  // Whether a macro body reads `varargs` / `kwargs`, which lets callers pass extra arguments.
  bool uses_varargs = false, uses_kwargs = false;
};

struct Program {
  std::vector<Stmt> body;
};

}  // namespace lora::data::jinja
