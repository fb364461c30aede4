#include "data/jinja/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "data/jinja/jinja_text.h"

namespace lora::data::jinja {

const Value* ObjectData::find(std::string_view key) const {
  for (const auto& [k, v] : entries)
    if (k == key) return &v;
  return nullptr;
}

void ObjectData::set(std::string key, Value value) {
  for (auto& [k, v] : entries) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  entries.emplace_back(std::move(key), std::move(value));
}

const Value* CallArgs::keyword(std::string_view name) const {
  for (const auto& [k, v] : keywords)
    if (k == name) return &v;
  return nullptr;
}

const Value* CallArgs::get(std::size_t index, std::string_view name) const {
  if (index < positional.size()) return &positional[index];
  return keyword(name);
}

Value Value::array(std::vector<Value> items, bool is_tuple) {
  return Value(Payload{}, std::make_shared<const ArrayData>(ArrayData{std::move(items), is_tuple}));
}

Value Value::object(std::vector<std::pair<std::string, Value>> entries, ObjectKind kind) {
  return Value(Payload{}, std::make_shared<ObjectData>(ObjectData{std::move(entries), kind}));
}

Value Value::function(std::string name, NativeFunction fn) {
  return Value(Payload{},
               std::make_shared<const FunctionData>(FunctionData{std::move(name), std::move(fn)}));
}

const void* Value::identity() const {
  switch (kind()) {
    case Kind::String:
      return std::get<StringPtr>(v_).get();
    case Kind::Array:
      return std::get<ArrayPtr>(v_).get();
    case Kind::Object:
      return std::get<ObjectPtr>(v_).get();
    case Kind::Function:
      return std::get<FunctionPtr>(v_).get();
    default:
      return nullptr;
  }
}

const char* kind_name(Value::Kind kind) {
  switch (kind) {
    case Value::Kind::Undefined:
      return "undefined";
    case Value::Kind::None:
      return "none";
    case Value::Kind::Bool:
      return "boolean";
    case Value::Kind::Int:
      return "integer";
    case Value::Kind::Float:
      return "float";
    case Value::Kind::String:
      return "string";
    case Value::Kind::Array:
      return "list";
    case Value::Kind::Object:
      return "dict";
    case Value::Kind::Function:
      return "function";
  }
  return "value";
}

bool truthy(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Undefined:
    case Value::Kind::None:
      return false;
    case Value::Kind::Bool:
      return v.as_bool();
    case Value::Kind::Int:
      return v.as_int() != 0;
    case Value::Kind::Float:
      return v.as_float() != 0 && !std::isnan(v.as_float());
    case Value::Kind::String:
      return !v.str().empty();
    case Value::Kind::Array:
      return !v.items().empty();
    case Value::Kind::Object:
      return v.is_namespace() || !v.obj().entries.empty();
    case Value::Kind::Function:
      return true;
  }
  return false;
}

namespace {

// JavaScript's ToNumber for a string: surrounding whitespace ignored, "" is 0, junk is NaN.
double js_string_to_number(std::string_view s) {
  s = trim(s);
  if (s.empty()) return 0;
  const bool negative = s.front() == '-';
  std::string_view body = (s.front() == '+' || s.front() == '-') ? s.substr(1) : s;
  if (body == "Infinity") return negative ? -INFINITY : INFINITY;
  if (body.size() > 2 && body[0] == '0' && s.size() == body.size()) {
    const char prefix = static_cast<char>(body[1] | 0x20);
    const int base = prefix == 'x' ? 16 : prefix == 'o' ? 8 : prefix == 'b' ? 2 : 0;
    if (base != 0) {
      double value = 0;
      for (char c : body.substr(2)) {
        int digit = c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' ? (c | 0x20) - 'a' + 10 : 99;
        if (digit >= base) return NAN;
        value = value * base + digit;
      }
      return value;
    }
  }
  if (body.empty() || !(std::isdigit(static_cast<unsigned char>(body[0])) || body[0] == '.'))
    return NAN;
  double value = 0;
  auto res = std::from_chars(body.data(), body.data() + body.size(), value);
  if (res.ec != std::errc() || res.ptr != body.data() + body.size()) return NAN;
  return negative ? -value : value;
}

bool is_numeric_like(const Value& v) { return v.is_number() || v.is_bool(); }
double numeric_value(const Value& v) {
  return v.is_bool() ? (v.as_bool() ? 1.0 : 0.0) : v.as_double();
}

}  // namespace

bool loose_equal(const Value& a, const Value& b) {
  const bool a_nullish = a.is_undefined() || a.is_none();
  const bool b_nullish = b.is_undefined() || b.is_none();
  if (a_nullish || b_nullish) return a_nullish && b_nullish;
  if (a.is_string() && b.is_string()) return a.str() == b.str();
  if (is_numeric_like(a) && is_numeric_like(b)) return numeric_value(a) == numeric_value(b);
  if (is_numeric_like(a) && b.is_string()) return numeric_value(a) == js_string_to_number(b.str());
  if (a.is_string() && is_numeric_like(b)) return js_string_to_number(a.str()) == numeric_value(b);
  // Containers and functions are equal only to themselves.
  return a.kind() == b.kind() && a.identity() == b.identity();
}

bool strict_equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) return a.as_double() == b.as_double();
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::Undefined:
    case Value::Kind::None:
      return true;
    case Value::Kind::Bool:
      return a.as_bool() == b.as_bool();
    case Value::Kind::String:
      return a.str() == b.str();
    default:
      return a.identity() == b.identity();
  }
}

int compare_values(const Value& a, const Value& b, bool case_sensitive) {
  if (a.is_none() && b.is_none()) return 0;
  if (a.is_undefined() && b.is_undefined()) return 0;
  if (a.is_none() || b.is_none() || a.is_undefined() || b.is_undefined())
    throw TemplateError(std::string("cannot compare ") + kind_name(a) + " with " + kind_name(b));
  if (is_numeric_like(a) && is_numeric_like(b)) {
    const double x = numeric_value(a), y = numeric_value(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    const int c =
        case_sensitive ? a.str().compare(b.str()) : to_lower(a.str()).compare(to_lower(b.str()));
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  throw TemplateError(std::string("cannot compare ") + kind_name(a) + " with " + kind_name(b));
}

std::string display_string(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Undefined:
      return "undefined";
    case Value::Kind::None:
      return "null";
    case Value::Kind::Bool:
      return v.as_bool() ? "true" : "false";
    case Value::Kind::Int:
      return std::to_string(v.as_int());
    case Value::Kind::Float:
      return float_display(v.as_float());
    case Value::Kind::String:
      return v.str();
    case Value::Kind::Array:
    case Value::Kind::Object: {
      JsonOptions options;
      options.undefined_as_null = false;
      return to_json(v, options);
    }
    case Value::Kind::Function: {
      std::string s = "[function ";  // appended, not `"..." + name`: GCC 12 misreports that
      s += v.fn().name;
      s += ']';
      return s;
    }
  }
  return {};
}

std::string concat_string(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Float:
      return js_number(v.as_float());
    case Value::Kind::Array: {  // JavaScript's Array.prototype.toString
      std::string out;
      for (std::size_t i = 0; i < v.items().size(); ++i) {
        if (i) out += ',';
        out += display_string(v.items()[i]);
      }
      return out;
    }
    case Value::Kind::Object:
      return "[object Map]";
    default:
      return display_string(v);
  }
}

std::string join_piece(const Value& v) {
  if (v.is_none() || v.is_undefined()) return {};
  return concat_string(v);
}

namespace {

// Deeper than this is either hostile input or a namespace that contains itself.
constexpr int64_t kMaxNesting = 512;

void append_json(std::string& out, const Value& v, const JsonOptions& o, int64_t depth) {
  if (depth > kMaxNesting)
    throw TemplateError("value nests too deeply to print (a namespace that contains itself?)");
  const bool indented = o.indent && *o.indent > 0;
  // Python's json.dumps spacing: ", " between items, "," when indenting, ": " after keys.
  const std::string_view item_sep = o.separators ? std::string_view(o.separators->first)
                                    : indented   ? std::string_view(",")
                                                 : std::string_view(", ");
  const std::string_view key_sep =
      o.separators ? std::string_view(o.separators->second) : std::string_view(": ");
  const std::string unit = indented ? std::string(static_cast<std::size_t>(*o.indent), ' ') : "";
  const auto padding = [&](int64_t d) {
    std::string p = "\n";
    for (int64_t i = 0; i < d; ++i) p += unit;
    return p;
  };
  switch (v.kind()) {
    case Value::Kind::Undefined:
      out += o.undefined_as_null ? "null" : "undefined";
      return;
    case Value::Kind::None:
      out += "null";
      return;
    case Value::Kind::Bool:
      out += v.as_bool() ? "true" : "false";
      return;
    case Value::Kind::Int:
      out += std::to_string(v.as_int());
      return;
    case Value::Kind::Float:
      out += std::isfinite(v.as_float()) ? js_number(v.as_float()) : "null";
      return;
    case Value::Kind::String:
      append_json_string(out, v.str(), o.ensure_ascii);
      return;
    case Value::Kind::Function:
      throw TemplateError("cannot convert a function to JSON");
    case Value::Kind::Array: {
      const auto& items = v.items();
      out += '[';
      for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += item_sep;
        if (indented) out += padding(depth + 1);
        append_json(out, items[i], o, depth + 1);
      }
      if (indented && !items.empty()) out += padding(depth);
      out += ']';
      return;
    }
    case Value::Kind::Object: {
      std::vector<const std::pair<std::string, Value>*> entries;
      for (const auto& e : v.obj().entries) entries.push_back(&e);
      if (o.sort_keys)
        std::stable_sort(entries.begin(), entries.end(),
                         [](auto* a, auto* b) { return a->first < b->first; });
      out += '{';
      for (std::size_t i = 0; i < entries.size(); ++i) {
        if (i) out += item_sep;
        if (indented) out += padding(depth + 1);
        append_json_string(out, entries[i]->first, o.ensure_ascii);
        out += key_sep;
        append_json(out, entries[i]->second, o, depth + 1);
      }
      if (indented && !entries.empty()) out += padding(depth);
      out += '}';
      return;
    }
  }
}

}  // namespace

std::string to_json(const Value& v, const JsonOptions& options) {
  std::string out;
  append_json(out, v, options, 0);
  return out;
}

namespace {

Value from_json_at(const nlohmann::ordered_json& j, int64_t depth) {
  using T = nlohmann::ordered_json::value_t;
  if (depth > kMaxNesting) throw TemplateError("template context nests too deeply");
  switch (j.type()) {
    case T::null:
      return Value::none();
    case T::boolean:
      return Value::boolean(j.get<bool>());
    case T::string:
      return Value::string(j.get<std::string>());
    case T::number_integer:
      return Value::integer(j.get<int64_t>());
    case T::number_unsigned: {
      const auto u = j.get<uint64_t>();
      return u <= uint64_t(INT64_MAX) ? Value::integer(int64_t(u)) : Value::number(double(u));
    }
    case T::number_float: {
      // JavaScript has one number type: 2.0 in JSON is the integer 2 there.
      const double f = j.get<double>();
      if (std::isfinite(f) && std::trunc(f) == f && std::fabs(f) < 9007199254740992.0)
        return Value::integer(static_cast<int64_t>(f));
      return Value::number(f);
    }
    case T::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json_at(e, depth + 1));
      return Value::array(std::move(items));
    }
    case T::object: {
      std::vector<std::pair<std::string, Value>> entries;
      entries.reserve(j.size());
      for (const auto& [k, e] : j.items()) entries.emplace_back(k, from_json_at(e, depth + 1));
      return Value::object(std::move(entries));
    }
    default:
      throw TemplateError("unsupported JSON value in the template context");
  }
}

}  // namespace

Value from_json(const nlohmann::ordered_json& j) { return from_json_at(j, 0); }

}  // namespace lora::data::jinja
