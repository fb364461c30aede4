#include "data/jinja/jinja_interpreter.h"

#include <cmath>
#include <limits>

#include "data/jinja/jinja_builtins.h"
#include "data/jinja/jinja_text.h"

namespace lora::data::jinja {

const Value* Scope::lookup(std::string_view name) const {
  for (const Scope* s = this; s; s = s->parent_)
    if (const Value* v = s->vars_.find(name)) return v;
  return nullptr;
}

void Scope::set(std::string_view name, Value value) {
  vars_.set(std::string(name), std::move(value));
}

struct Interpreter::DepthGuard {
  explicit DepthGuard(Interpreter& in) : interpreter(in) {
    if (++interpreter.depth_ > interpreter.limits_.max_depth)
      throw TemplateError("recursion too deep (more than " +
                          std::to_string(interpreter.limits_.max_depth) + " levels)");
  }
  ~DepthGuard() { --interpreter.depth_; }
  DepthGuard(const DepthGuard&) = delete;
  DepthGuard& operator=(const DepthGuard&) = delete;
  Interpreter& interpreter;
};

Interpreter::~Interpreter() {
  // A namespace may hold itself (directly or through a list); emptying every namespace made
  // during the render releases such cycles.
  for (auto& ns : namespaces_) ns.namespace_data().entries.clear();
}

void Interpreter::check_string_size(std::size_t bytes) const {
  if (bytes > limits_.max_output_bytes)
    throw TemplateError("string grows past the " + std::to_string(limits_.max_output_bytes) +
                        "-byte limit");
}

void Interpreter::check_item_count(std::size_t items) const {
  if (items > limits_.max_items)
    throw TemplateError("list grows past the " + std::to_string(limits_.max_items) + "-item limit");
}

void Interpreter::count_iterations(std::size_t n) {
  iterations_ += n;
  if (iterations_ > limits_.max_iterations)
    throw TemplateError("more than " + std::to_string(limits_.max_iterations) + " loop iterations");
}

Value Interpreter::make_namespace(std::vector<std::pair<std::string, Value>> entries) {
  Value ns = Value::object(std::move(entries), ObjectKind::Namespace);
  namespaces_.push_back(ns);
  return ns;
}

std::string Interpreter::render(const Program& program, Scope& globals) {
  std::string out;
  if (exec(program.body, globals, out) != Flow::Normal)
    throw TemplateError("'break' or 'continue' outside a loop");
  return out;
}

std::string Interpreter::render_block(const std::vector<Stmt>& body, Scope& scope) {
  std::string out;
  if (exec(body, scope, out) != Flow::Normal)
    throw TemplateError("'break' or 'continue' outside a loop");
  return out;
}

Interpreter::Flow Interpreter::exec(const std::vector<Stmt>& body, Scope& scope, std::string& out) {
  for (const auto& s : body) {
    const Flow flow = exec(s, scope, out);
    if (flow != Flow::Normal) return flow;
  }
  return Flow::Normal;
}

Interpreter::Flow Interpreter::exec(const Stmt& s, Scope& scope, std::string& out) {
  DepthGuard guard(*this);
  try {
    switch (s.kind) {
      case StmtKind::Text:
        out += s.text;
        break;
      case StmtKind::Output: {
        const Value v = eval(*s.expr, scope);
        if (!v.is_none() && !v.is_undefined()) out += v.is_string() ? v.str() : display_string(v);
        break;
      }
      case StmtKind::If:
        return exec(truthy(eval(*s.expr, scope)) ? s.body : s.orelse, scope, out);
      case StmtKind::For:
        return exec_for(s, scope, out);
      case StmtKind::Set:
        assign(*s.target, eval(*s.expr, scope), scope);
        break;
      case StmtKind::SetBlock:
        assign(*s.target, Value::string(render_block(s.body, scope)), scope);
        break;
      case StmtKind::Macro:
        scope.set(s.text, make_macro(s));
        break;
      case StmtKind::CallBlock:
        exec_call_block(s, scope, out);
        break;
      case StmtKind::FilterBlock: {
        CallArgs args = eval_args(s.expr->list, scope);
        const Value v = apply_filter(*this, s.expr->name,
                                     Value::string(render_block(s.body, scope)), args, scope);
        if (!v.is_none() && !v.is_undefined()) out += display_string(v);
        break;
      }
      case StmtKind::Break:
        return Flow::Break;
      case StmtKind::Continue:
        return Flow::Continue;
    }
  } catch (TemplateError& e) {
    if (!e.pos) e.pos = s.pos;
    throw;
  }
  check_string_size(out.size());
  return Flow::Normal;
}

void Interpreter::assign(const Expr& target, Value value, Scope& scope) {
  switch (target.kind) {
    case ExprKind::Name:
      scope.set(target.name, std::move(value));
      return;
    case ExprKind::Tuple: {
      if (!value.is_array())
        throw TemplateError(std::string("cannot unpack a ") + kind_name(value) + " into names");
      const auto& items = value.items();
      if (items.size() != target.list.size())
        throw TemplateError(std::string("too ") +
                            (items.size() < target.list.size() ? "few" : "many") +
                            " values to unpack (expected " + std::to_string(target.list.size()) +
                            ", got " + std::to_string(items.size()) + ")");
      for (std::size_t i = 0; i < items.size(); ++i) scope.set(target.list[i]->name, items[i]);
      return;
    }
    case ExprKind::Attribute: {
      const Value object = eval(*target.a, scope);
      if (!object.is_namespace())
        throw TemplateError("cannot set attribute '" + target.name + "' on a " + kind_name(object) +
                            " (only a namespace() can be changed)");
      object.namespace_data().set(target.name, std::move(value));
      return;
    }
    default:
      throw TemplateError("cannot assign to this expression");
  }
}

Interpreter::Flow Interpreter::exec_for(const Stmt& s, Scope& scope, std::string& out) {
  Scope loop_scope(&scope);
  const Value iterable = eval(*s.expr, loop_scope);
  std::vector<Value> candidates;
  if (iterable.is_array()) {
    candidates = iterable.items();
  } else if (iterable.is_dict()) {
    for (const auto& [k, v] : iterable.obj().entries) candidates.push_back(Value::string(k));
  } else if (iterable.is_string()) {
    for (auto& c : split_characters(iterable.str()))
      candidates.push_back(Value::string(std::move(c)));
  } else {
    throw TemplateError(std::string("cannot loop over a ") + kind_name(iterable));
  }
  count_iterations(candidates.size());
  std::vector<Value> items;
  if (s.condition) {  // `for x in xs if cond`: the loop sees only the items that pass
    for (auto& item : candidates) {
      Scope filter_scope(&loop_scope);
      assign(*s.target, item, filter_scope);
      if (truthy(eval(*s.condition, filter_scope))) items.push_back(std::move(item));
    }
  } else {
    items = std::move(candidates);
  }
  // As in the reference renderer, an iteration that ends in break/continue contributes no
  // output, and the else block runs when no iteration completed normally.
  bool completed_any = false;
  const auto n = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < n; ++i) {
    const auto idx = static_cast<std::size_t>(i);
    std::vector<std::pair<std::string, Value>> loop{
        {"index", Value::integer(i + 1)},
        {"index0", Value::integer(i)},
        {"revindex", Value::integer(n - i)},
        {"revindex0", Value::integer(n - i - 1)},
        {"first", Value::boolean(i == 0)},
        {"last", Value::boolean(i == n - 1)},
        {"length", Value::integer(n)},
        {"previtem", i > 0 ? items[idx - 1] : Value()},
        {"nextitem", i < n - 1 ? items[idx + 1] : Value()},
    };
    loop_scope.set("loop", Value::object(std::move(loop)));
    assign(*s.target, items[idx], loop_scope);
    const std::size_t mark = out.size();
    const Flow flow = exec(s.body, loop_scope, out);
    if (flow != Flow::Normal) {
      out.resize(mark);
      if (flow == Flow::Break) break;
      continue;
    }
    completed_any = true;
  }
  if (!completed_any) {
    const Flow flow = exec(s.orelse, loop_scope, out);
    if (flow != Flow::Normal) return flow;
  }
  return Flow::Normal;
}

void Interpreter::bind_arguments(const Stmt& s, std::string_view display_name, CallArgs& args,
                                 Scope& scope) {
  std::vector<const Expr*> pending_defaults;
  for (std::size_t i = 0; i < s.params.size(); ++i) {
    const Expr& param = *s.params[i];
    std::optional<Value> value;
    if (i < args.positional.size()) {
      value = args.positional[i];
    } else {
      for (auto it = args.keywords.begin(); it != args.keywords.end(); ++it) {
        if (it->first == param.name) {
          value = std::move(it->second);
          args.keywords.erase(it);
          break;
        }
      }
    }
    if (!value && param.kind == ExprKind::Keyword) pending_defaults.push_back(&param);
    scope.set(param.name, value ? std::move(*value) : Value());
  }
  if (s.uses_kwargs) {
    scope.set("kwargs", Value::object(std::move(args.keywords), ObjectKind::Kwargs));
  } else if (!args.keywords.empty()) {
    throw TemplateError(std::string(display_name) + " takes no keyword argument '" +
                        args.keywords.front().first + "'");
  }
  if (s.uses_varargs) {
    std::vector<Value> extra;
    for (std::size_t i = s.params.size(); i < args.positional.size(); ++i)
      extra.push_back(args.positional[i]);
    scope.set("varargs", Value::array(std::move(extra)));
  } else if (args.positional.size() > s.params.size()) {
    throw TemplateError(std::string(display_name) + " takes at most " +
                        std::to_string(s.params.size()) + " argument(s), got " +
                        std::to_string(args.positional.size()));
  }
  // Defaults are evaluated after every parameter is bound, so they may refer to earlier ones.
  for (const Expr* param : pending_defaults) scope.set(param->name, eval(*param->a, scope));
}

Value Interpreter::make_macro(const Stmt& s) {
  const Stmt* macro = &s;  // the Program outlives every render that can call it
  return Value::function(s.text, [macro](Interpreter& in, CallArgs& args, Scope& caller_scope) {
    DepthGuard guard(in);
    // Like the reference renderer, a macro body sees the variables of the place it is
    // called from.
    Scope scope(&caller_scope);
    in.bind_arguments(*macro, "macro '" + macro->text + "'", args, scope);
    return Value::string(in.render_block(macro->body, scope));
  });
}

void Interpreter::exec_call_block(const Stmt& s, Scope& scope, std::string& out) {
  // caller() renders the block in the scope where the call block stands. That scope dies when
  // the block is done; `alive` makes a caller() smuggled out (into a namespace) an error.
  auto alive = std::make_shared<bool>(true);
  struct Expire {
    std::shared_ptr<bool>& flag;
    ~Expire() { *flag = false; }
  } expire{alive};
  Scope* definition_scope = &scope;
  const Stmt* block = &s;
  std::weak_ptr<bool> alive_ref = alive;
  Value caller = Value::function(
      "caller", [block, definition_scope, alive_ref](Interpreter& in, CallArgs& args, Scope&) {
        const auto flag = alive_ref.lock();
        if (!flag || !*flag) throw TemplateError("caller() used outside its call block");
        DepthGuard guard(in);
        Scope body_scope(definition_scope);
        in.bind_arguments(*block, "caller", args, body_scope);
        return Value::string(in.render_block(block->body, body_scope));
      });
  const Expr& call = *s.expr;
  CallArgs args = eval_args(call.list, scope);
  const Value fn = eval(*call.a, scope);
  Scope call_scope(&scope);
  call_scope.set("caller", std::move(caller));
  const Value result = this->call(fn, args, call_scope);
  if (!result.is_none() && !result.is_undefined()) out += display_string(result);
}

CallArgs Interpreter::eval_args(const std::vector<ExprPtr>& args, Scope& scope) {
  CallArgs result;
  const auto add_keyword = [&](const std::string& key, Value v) {
    if (result.keyword(key))
      throw TemplateError("got multiple values for keyword argument '" + key + "'");
    result.keywords.emplace_back(key, std::move(v));
  };
  for (const auto& arg : args) {
    switch (arg->kind) {
      case ExprKind::Spread: {
        const Value v = eval(*arg->a, scope);
        if (!v.is_array())
          throw TemplateError(std::string("cannot unpack a ") + kind_name(v) + " with *");
        for (const auto& item : v.items()) result.positional.push_back(item);
        break;
      }
      case ExprKind::Keyword:
        add_keyword(arg->name, eval(*arg->a, scope));
        break;
      case ExprKind::KeywordSpread: {
        const Value v = eval(*arg->a, scope);
        if (!v.is_dict())
          throw TemplateError(std::string("cannot unpack a ") + kind_name(v) + " with **");
        for (const auto& [k, item] : v.obj().entries) add_keyword(k, item);
        break;
      }
      default:
        result.positional.push_back(eval(*arg, scope));
    }
  }
  return result;
}

Value Interpreter::call(const Value& fn, CallArgs& args, Scope& scope) {
  if (!fn.is_function())
    throw TemplateError(std::string("cannot call a ") + kind_name(fn) + ", it is not a function");
  return fn.fn().call(*this, args, scope);
}

Value Interpreter::eval_call(const Expr& e, Scope& scope) {
  CallArgs args = eval_args(e.list, scope);
  const Value fn = eval(*e.a, scope);
  if (!fn.is_function()) {
    if (e.a->kind == ExprKind::Name && fn.is_undefined())
      throw TemplateError("'" + e.a->name + "' is undefined, it cannot be called");
    if (e.a->kind == ExprKind::Attribute)
      throw TemplateError("'" + e.a->name + "' is not a method of a " +
                          kind_name(eval(*e.a->a, scope)));
  }
  return call(fn, args, scope);
}

Value Interpreter::eval(const Expr& e, Scope& scope) {
  DepthGuard guard(*this);
  try {
    switch (e.kind) {
      case ExprKind::Literal:
        return e.literal;
      case ExprKind::Name: {
        const Value* v = scope.lookup(e.name);
        return v ? *v : Value();
      }
      case ExprKind::List:
      case ExprKind::Tuple: {
        std::vector<Value> items;
        items.reserve(e.list.size());
        for (const auto& item : e.list) items.push_back(eval(*item, scope));
        return Value::array(std::move(items), e.kind == ExprKind::Tuple);
      }
      case ExprKind::Dict: {
        std::vector<std::pair<std::string, Value>> entries;
        for (std::size_t i = 0; i + 1 < e.list.size(); i += 2) {
          const Value key = eval(*e.list[i], scope);
          if (!key.is_string())
            throw TemplateError(std::string("dict keys must be strings, got a ") + kind_name(key));
          Value value = eval(*e.list[i + 1], scope);
          bool replaced = false;
          for (auto& [k, v] : entries)
            if (k == key.str()) {
              v = value;
              replaced = true;
            }
          if (!replaced) entries.emplace_back(key.str(), std::move(value));
        }
        return Value::object(std::move(entries));
      }
      case ExprKind::Attribute:
        return get_member(eval(*e.a, scope), Value::string(e.name));
      case ExprKind::Index: {
        const Value object = eval(*e.a, scope);
        return get_member(object, eval(*e.b, scope));
      }
      case ExprKind::Slice:
        return eval_slice(e, scope);
      case ExprKind::Call:
        return eval_call(e, scope);
      case ExprKind::Filter: {
        const Value operand = eval(*e.a, scope);
        CallArgs args = eval_args(e.list, scope);
        return apply_filter(*this, e.name, operand, args, scope);
      }
      case ExprKind::Test: {
        const Value operand = eval(*e.a, scope);
        const CallArgs args = eval_args(e.list, scope);
        return Value::boolean(apply_test(e.name, operand, args) != e.flag);
      }
      case ExprKind::Unary:
        return eval_unary(e, scope);
      case ExprKind::Binary:
        return eval_binary(e, scope);
      case ExprKind::Ternary:
        return truthy(eval(*e.a, scope)) ? eval(*e.b, scope) : eval(*e.c, scope);
      case ExprKind::Select:
        return truthy(eval(*e.b, scope)) ? eval(*e.a, scope) : Value();
      case ExprKind::Keyword:
      case ExprKind::Spread:
      case ExprKind::KeywordSpread:
        throw TemplateError("argument syntax outside of a call");
    }
  } catch (TemplateError& err) {
    if (!err.pos) err.pos = e.pos;
    throw;
  }
  return Value();
}

Value Interpreter::eval_unary(const Expr& e, Scope& scope) {
  const Value v = eval(*e.a, scope);
  if (e.op == Op::Not) return Value::boolean(!truthy(v));
  const bool negate = e.op == Op::Neg;
  if (v.is_float()) return Value::number(negate ? -v.as_float() : v.as_float());
  if (v.is_int() || v.is_bool()) {
    const int64_t i = v.is_bool() ? int64_t(v.as_bool()) : v.as_int();
    if (negate && i == std::numeric_limits<int64_t>::min()) throw TemplateError("integer overflow");
    return Value::integer(negate ? -i : i);
  }
  throw TemplateError(std::string("bad operand for unary ") + (negate ? "-" : "+") + ": a " +
                      kind_name(v));
}

namespace {

const char* op_text(Op op) {
  switch (op) {
    case Op::Add:
      return "+";
    case Op::Sub:
      return "-";
    case Op::Mul:
      return "*";
    case Op::Div:
      return "/";
    case Op::FloorDiv:
      return "//";
    case Op::Mod:
      return "%";
    case Op::Pow:
      return "**";
    case Op::Concat:
      return "~";
    case Op::Eq:
      return "==";
    case Op::Ne:
      return "!=";
    case Op::Lt:
      return "<";
    case Op::Gt:
      return ">";
    case Op::Le:
      return "<=";
    case Op::Ge:
      return ">=";
    case Op::In:
      return "in";
    case Op::NotIn:
      return "not in";
    case Op::And:
      return "and";
    case Op::Or:
      return "or";
    default:
      return "?";
  }
}

Value integer_power(int64_t base, int64_t exponent) {
  int64_t result = 1;
  while (exponent > 0) {
    if ((exponent & 1) && __builtin_mul_overflow(result, base, &result))
      throw TemplateError("integer overflow in **");
    exponent >>= 1;
    if (exponent > 0 && __builtin_mul_overflow(base, base, &base))
      throw TemplateError("integer overflow in **");
  }
  return Value::integer(result);
}

Value integer_arithmetic(Op op, int64_t a, int64_t b) {
  int64_t r = 0;
  switch (op) {
    case Op::Add:
      if (__builtin_add_overflow(a, b, &r)) throw TemplateError("integer overflow in +");
      return Value::integer(r);
    case Op::Sub:
      if (__builtin_sub_overflow(a, b, &r)) throw TemplateError("integer overflow in -");
      return Value::integer(r);
    case Op::Mul:
      if (__builtin_mul_overflow(a, b, &r)) throw TemplateError("integer overflow in *");
      return Value::integer(r);
    case Op::Div:
      if (b == 0) throw TemplateError("division by zero");
      return Value::number(double(a) / double(b));
    case Op::FloorDiv: {
      if (b == 0) throw TemplateError("division by zero");
      if (a == std::numeric_limits<int64_t>::min() && b == -1)
        throw TemplateError("integer overflow in //");
      int64_t q = a / b;
      if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
      return Value::integer(q);
    }
    case Op::Mod:  // JavaScript's remainder: the sign follows the dividend
      if (b == 0) throw TemplateError("modulo by zero");
      if (b == -1) return Value::integer(0);
      return Value::integer(a % b);
    default:
      return Value();
  }
}

Value float_arithmetic(Op op, double a, double b) {
  switch (op) {
    case Op::Add:
      return Value::number(a + b);
    case Op::Sub:
      return Value::number(a - b);
    case Op::Mul:
      return Value::number(a * b);
    case Op::Div:
      if (b == 0) throw TemplateError("division by zero");
      return Value::number(a / b);
    case Op::FloorDiv:
      if (b == 0) throw TemplateError("division by zero");
      return Value::number(std::floor(a / b));
    case Op::Mod:
      if (b == 0) throw TemplateError("modulo by zero");
      return Value::number(std::fmod(a, b));
    default:
      return Value();
  }
}

bool compare(Op op, int c) {
  switch (op) {
    case Op::Lt:
      return c < 0;
    case Op::Gt:
      return c > 0;
    case Op::Le:
      return c <= 0;
    default:
      return c >= 0;
  }
}

bool contains(const Value& container, const Value& needle, bool& handled) {
  handled = true;
  if (container.is_array()) {
    for (const auto& item : container.items())
      if (strict_equal(item, needle)) return true;
    return false;
  }
  if (container.is_string() && needle.is_string())
    return container.str().find(needle.str()) != std::string::npos;
  if (container.is_dict() && needle.is_string())
    return container.obj().find(needle.str()) != nullptr;
  handled = false;
  return false;
}

}  // namespace

Value Interpreter::concatenate(const Value& left, const Value& right) const {
  // Strings are appended in place; other values go through their JavaScript string form.
  const auto piece = [](const Value& v) {
    return v.is_string() ? std::string_view(v.str()) : std::string_view();
  };
  std::string left_text = left.is_string() ? std::string() : concat_string(left);
  std::string right_text = right.is_string() ? std::string() : concat_string(right);
  const std::string_view a = left.is_string() ? piece(left) : std::string_view(left_text);
  const std::string_view b = right.is_string() ? piece(right) : std::string_view(right_text);
  check_string_size(a.size() + b.size());
  std::string s;
  s.reserve(a.size() + b.size());
  s.append(a);
  s.append(b);
  return Value::string(std::move(s));
}

Value Interpreter::eval_binary(const Expr& e, Scope& scope) {
  const Op op = e.op;
  Value left = eval(*e.a, scope);
  if (op == Op::And) return truthy(left) ? eval(*e.b, scope) : left;
  if (op == Op::Or) return truthy(left) ? left : eval(*e.b, scope);
  const Value right = eval(*e.b, scope);
  if (op == Op::Eq) return Value::boolean(loose_equal(left, right));
  if (op == Op::Ne) return Value::boolean(!loose_equal(left, right));
  const auto unsupported = [&]() {
    return TemplateError(std::string("unsupported operand types for '") + op_text(op) +
                         "': " + kind_name(left) + " and " + kind_name(right));
  };
  if (left.is_undefined() || right.is_undefined()) {
    if (right.is_undefined() && (op == Op::In || op == Op::NotIn))
      return Value::boolean(op == Op::NotIn);
    throw TemplateError(std::string("cannot apply '") + op_text(op) + "' to an undefined value");
  }
  if (left.is_none() || right.is_none())
    throw TemplateError(std::string("cannot apply '") + op_text(op) + "' to none");
  if (op == Op::In || op == Op::NotIn) {
    bool handled = false;
    const bool found = contains(right, left, handled);
    if (!handled) throw unsupported();
    return Value::boolean(found != (op == Op::NotIn));
  }
  if (op == Op::Concat) {
    return concatenate(left, right);
  }
  const bool numeric_like =
      (left.is_number() || left.is_bool()) && (right.is_number() || right.is_bool());
  if (op == Op::Pow && numeric_like) {
    const bool is_float = left.is_float() || right.is_float();
    const double a = left.is_bool() ? double(left.as_bool()) : left.as_double();
    const double b = right.is_bool() ? double(right.as_bool()) : right.as_double();
    if (a == 0 && b < 0) throw TemplateError("0 cannot be raised to a negative power");
    if (is_float || b < 0) {
      const double r = std::pow(a, b);
      if (!std::isfinite(r)) throw TemplateError("** result is not a finite number");
      return Value::number(r);
    }
    return integer_power(left.is_bool() ? int64_t(left.as_bool()) : left.as_int(),
                         right.is_bool() ? int64_t(right.as_bool()) : right.as_int());
  }
  if (left.is_number() && right.is_number()) {
    if (op == Op::Lt || op == Op::Gt || op == Op::Le || op == Op::Ge) {
      const int c =
          (left.is_int() && right.is_int())
              ? (left.as_int() < right.as_int() ? -1 : left.as_int() > right.as_int())
              : (left.as_double() < right.as_double() ? -1 : left.as_double() > right.as_double());
      return Value::boolean(compare(op, c));
    }
    if (left.is_int() && right.is_int())
      return integer_arithmetic(op, left.as_int(), right.as_int());
    return float_arithmetic(op, left.as_double(), right.as_double());
  }
  if (op == Op::Add && left.is_array() && right.is_array()) {
    check_item_count(left.items().size() + right.items().size());
    std::vector<Value> items = left.items();
    items.insert(items.end(), right.items().begin(), right.items().end());
    return Value::array(std::move(items));
  }
  if (op == Op::Add && (left.is_string() || right.is_string())) {
    return concatenate(left, right);
  }
  if ((op == Op::Lt || op == Op::Gt || op == Op::Le || op == Op::Ge) && left.is_string() &&
      right.is_string()) {
    const int c = left.str().compare(right.str());
    return Value::boolean(compare(op, c < 0 ? -1 : c > 0));
  }
  throw unsupported();
}

Value Interpreter::eval_slice(const Expr& e, Scope& scope) {
  const Value object = eval(*e.a, scope);
  if (!object.is_array() && !object.is_string())
    throw TemplateError(std::string("cannot slice a ") + kind_name(object));
  std::optional<int64_t> part[3];
  for (int k = 0; k < 3; ++k) {
    if (!e.list[k]) continue;
    const Value v = eval(*e.list[k], scope);
    if (v.is_undefined()) continue;
    if (!v.is_int())
      throw TemplateError(std::string("slice indices must be integers, got a ") + kind_name(v));
    part[k] = v.as_int();
  }
  std::vector<std::string> chars;
  if (object.is_string()) chars = split_characters(object.str());
  const int64_t n = object.is_array() ? int64_t(object.items().size()) : int64_t(chars.size());
  const int64_t step = part[2].value_or(1);
  std::vector<std::size_t> picks;
  // The reference renderer's slice rules (they differ from Python's for a stop of -1 with a
  // negative step).
  if (step > 0) {
    int64_t start = part[0].value_or(0), stop = part[1].value_or(n);
    start = start < 0 ? std::max(n + start, int64_t{0}) : std::min(start, n);
    stop = stop < 0 ? std::max(n + stop, int64_t{0}) : std::min(stop, n);
    for (int64_t i = start; i < stop; i += step) {
      picks.push_back(std::size_t(i));
      if (stop - i <= step) break;  // the next step would pass stop (and might overflow)
    }
  } else if (step < 0) {
    int64_t start = part[0].value_or(n - 1), stop = part[1].value_or(-1);
    start = start < 0 ? std::max(n + start, int64_t{-1}) : std::min(start, n - 1);
    stop = stop < -1 ? std::max(n + stop, int64_t{-1}) : std::min(stop, n - 1);
    for (int64_t i = start; i > stop; i += step) {
      picks.push_back(std::size_t(i));
      if ((i - stop) + step <= 0) break;  // i - stop >= 0, so this cannot overflow
    }
  }
  if (object.is_array()) {
    std::vector<Value> items;
    items.reserve(picks.size());
    for (auto i : picks) items.push_back(object.items()[i]);
    return Value::array(std::move(items));
  }
  std::string s;
  for (auto i : picks) s += chars[i];
  return Value::string(std::move(s));
}

}  // namespace lora::data::jinja
