// The values a chat template computes with. The semantics follow @huggingface/jinja (the renderer
// transformers.js uses, and the one the project's chat goldens come from): JavaScript-flavoured
// equality and number printing, Python-flavoured truthiness, insertion-ordered dicts.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace lora::data::jinja {

// An error raised while lexing, parsing or rendering. `pos` is a byte offset in the original
// template source; the innermost construct that knows its position fills it in.
struct TemplateError : std::runtime_error {
  explicit TemplateError(const std::string& message, std::optional<uint32_t> at = std::nullopt)
      : std::runtime_error(message), pos(at) {}
  std::optional<uint32_t> pos;
};

class Value;
class Interpreter;
class Scope;

struct ArrayData {
  std::vector<Value> items;
  bool is_tuple = false;
};

enum class ObjectKind : uint8_t {
  Dict,       // a JSON object, a dict literal, `loop`
  Kwargs,     // keyword arguments gathered for a call
  Namespace,  // namespace(): the only value a template can change in place
};

struct ObjectData {
  std::vector<std::pair<std::string, Value>> entries;  // insertion order
  ObjectKind kind = ObjectKind::Dict;

  const Value* find(std::string_view key) const;
  void set(std::string key, Value value);  // replaces in place or appends
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keywords;

  const Value* keyword(std::string_view name) const;
  // Positional argument `index`, else keyword `name`, else nullptr.
  const Value* get(std::size_t index, std::string_view name) const;
};

using NativeFunction = std::function<Value(Interpreter&, CallArgs&, Scope&)>;

struct FunctionData {
  std::string name;
  NativeFunction call;
};

struct Undefined {};
struct None {};

class Value {
 public:
  enum class Kind : uint8_t { Undefined, None, Bool, Int, Float, String, Array, Object, Function };

  Value() = default;  // undefined
  static Value none() { return Value(Payload{}, None{}); }
  static Value boolean(bool b) { return Value(Payload{}, b); }
  static Value integer(int64_t i) { return Value(Payload{}, i); }
  static Value number(double f) { return Value(Payload{}, f); }
  static Value string(std::string s) {
    return Value(Payload{}, std::make_shared<const std::string>(std::move(s)));
  }
  static Value array(std::vector<Value> items, bool is_tuple = false);
  static Value object(std::vector<std::pair<std::string, Value>> entries,
                      ObjectKind kind = ObjectKind::Dict);
  static Value function(std::string name, NativeFunction fn);

  Kind kind() const { return static_cast<Kind>(v_.index()); }
  bool is_undefined() const { return kind() == Kind::Undefined; }
  bool is_none() const { return kind() == Kind::None; }
  bool is_bool() const { return kind() == Kind::Bool; }
  bool is_int() const { return kind() == Kind::Int; }
  bool is_float() const { return kind() == Kind::Float; }
  bool is_number() const { return is_int() || is_float(); }
  bool is_string() const { return kind() == Kind::String; }
  bool is_array() const { return kind() == Kind::Array; }
  bool is_object() const { return kind() == Kind::Object; }
  bool is_function() const { return kind() == Kind::Function; }
  // A dict or keyword arguments (what the `mapping` test and dict methods accept).
  bool is_dict() const { return is_object() && obj().kind != ObjectKind::Namespace; }
  bool is_namespace() const { return is_object() && obj().kind == ObjectKind::Namespace; }

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const { return std::get<int64_t>(v_); }
  double as_float() const { return std::get<double>(v_); }
  double as_double() const { return is_int() ? double(as_int()) : as_float(); }
  const std::string& str() const { return *std::get<StringPtr>(v_); }
  const ArrayData& arr() const { return *std::get<ArrayPtr>(v_); }
  const std::vector<Value>& items() const { return arr().items; }
  const ObjectData& obj() const { return *std::get<ObjectPtr>(v_); }
  ObjectData& namespace_data() const { return *std::get<ObjectPtr>(v_); }
  const FunctionData& fn() const { return *std::get<FunctionPtr>(v_); }

  // Identity of a container or function (JavaScript compares those by reference).
  const void* identity() const;

 private:
  using StringPtr = std::shared_ptr<const std::string>;
  using ArrayPtr = std::shared_ptr<const ArrayData>;
  using ObjectPtr = std::shared_ptr<ObjectData>;
  using FunctionPtr = std::shared_ptr<const FunctionData>;
  struct Payload {};  // keeps this constructor from competing with the copy constructor
  template <typename T>
  Value(Payload, T&& v) : v_(std::forward<T>(v)) {}

  std::variant<Undefined, None, bool, int64_t, double, StringPtr, ArrayPtr, ObjectPtr, FunctionPtr>
      v_;
};

const char* kind_name(Value::Kind kind);
inline const char* kind_name(const Value& v) { return kind_name(v.kind()); }

// Python truthiness: empty strings, lists and dicts are false; a namespace is always true.
bool truthy(const Value& v);
// JavaScript `a == b` on the underlying values (null == undefined, 1 == 1.0, "1" == 1).
bool loose_equal(const Value& a, const Value& b);
// JavaScript `a === b` on the underlying values (what `in`, `unique` and the eq test use).
bool strict_equal(const Value& a, const Value& b);
// Ordering used by `sort` and `dictsort`; strings compare case-insensitively unless asked.
int compare_values(const Value& a, const Value& b, bool case_sensitive);

// What `{{ v }}` prints: 1.0 -> "1.0", true -> "true", lists and dicts as JSON.
std::string display_string(const Value& v);
// What `+` and `~` concatenate: the JavaScript string of the underlying value (1.0 -> "1").
std::string concat_string(const Value& v);
// What the join filter concatenates (none and undefined become "").
std::string join_piece(const Value& v);

struct JsonOptions {
  std::optional<int64_t> indent;
  bool ensure_ascii = false;
  bool sort_keys = false;
  std::optional<std::pair<std::string, std::string>> separators;
  bool undefined_as_null = true;
};
// The tojson filter, spaced like Python's json.dumps (", " and ": "; "," with an indent).
std::string to_json(const Value& v, const JsonOptions& options);

// JSON (messages, keyword arguments) into template values. Integral numbers become integers,
// as they do in JavaScript; key order is kept.
Value from_json(const nlohmann::ordered_json& j);

}  // namespace lora::data::jinja
