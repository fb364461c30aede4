// Renders a parsed template. Sandboxed: templates see only the values they are given and the
// builtins below; loops, recursion, collection sizes and output size are bounded.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data/jinja/jinja_ast.h"
#include "data/jinja/jinja_value.h"

namespace lora::data::jinja {

struct Limits {
  std::size_t max_output_bytes = std::size_t{16} << 20;  // also bounds every string built
  std::size_t max_items = 100'000;                       // list sizes (range(), concatenation)
  std::size_t max_iterations = 1'000'000;                // loop iterations in one render
  int max_depth = 400;                                   // nested evaluation, macro calls
};

// Variables visible to a template: a chain of scopes, innermost first.
class Scope {
 public:
  explicit Scope(Scope* parent = nullptr) : parent_(parent) {}
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

  const Value* lookup(std::string_view name) const;
  void set(std::string_view name, Value value);  // in this scope

 private:
  Scope* parent_;
  ObjectData vars_;
};

class Interpreter {
 public:
  explicit Interpreter(const Limits& limits) : limits_(limits) {}
  ~Interpreter();  // empties the namespaces made during the render (breaks reference cycles)
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  std::string render(const Program& program, Scope& globals);

  Value eval(const Expr& e, Scope& scope);
  Value call(const Value& fn, CallArgs& args, Scope& scope);

  // Sandbox accounting for builtins.
  const Limits& limits() const { return limits_; }
  void check_string_size(std::size_t bytes) const;
  void check_item_count(std::size_t items) const;
  void count_iterations(std::size_t n);
  Value make_namespace(std::vector<std::pair<std::string, Value>> entries);

 private:
  enum class Flow { Normal, Break, Continue };
  struct DepthGuard;

  Flow exec(const std::vector<Stmt>& body, Scope& scope, std::string& out);
  Flow exec(const Stmt& s, Scope& scope, std::string& out);
  Flow exec_for(const Stmt& s, Scope& scope, std::string& out);
  void exec_call_block(const Stmt& s, Scope& scope, std::string& out);
  void assign(const Expr& target, Value value, Scope& scope);
  std::string render_block(const std::vector<Stmt>& body, Scope& scope);

  Value eval_binary(const Expr& e, Scope& scope);
  Value concatenate(const Value& left, const Value& right) const;  // `+` on strings, `~`
  Value eval_unary(const Expr& e, Scope& scope);
  Value eval_slice(const Expr& e, Scope& scope);
  Value eval_call(const Expr& e, Scope& scope);
  CallArgs eval_args(const std::vector<ExprPtr>& args, Scope& scope);
  Value make_macro(const Stmt& s);
  void bind_arguments(const Stmt& s, std::string_view display_name, CallArgs& args, Scope& scope);

  Limits limits_;
  std::size_t iterations_ = 0;
  int depth_ = 0;
  std::vector<Value> namespaces_;
};

}  // namespace lora::data::jinja
