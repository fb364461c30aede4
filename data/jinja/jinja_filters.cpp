// Filters (`value | name(args)`) and tests (`value is name(args)`).
#include <algorithm>
#include <charconv>
#include <cmath>

#include "data/jinja/jinja_builtins.h"
#include "data/jinja/jinja_text.h"

namespace lora::data::jinja {

namespace {

[[noreturn]] void wrong_type(std::string_view filter, const Value& operand) {
  static constexpr std::string_view kKnown[] = {
      "trim",   "upper",      "lower",      "title",  "capitalize", "indent", "join",   "replace",
      "first",  "last",       "reverse",    "list",   "wordcount",  "sort",   "unique", "select",
      "reject", "selectattr", "rejectattr", "map",    "min",        "max",    "sum",    "abs",
      "round",  "items",      "keys",       "values", "dictsort",   "length", "count"};
  if (std::find(std::begin(kKnown), std::end(kKnown), filter) == std::end(kKnown))
    throw TemplateError("unknown filter '" + std::string(filter) + "'");
  throw TemplateError("filter '" + std::string(filter) + "' cannot be applied to a " +
                      kind_name(operand));
}

bool bool_arg(const CallArgs& args, std::size_t index, std::string_view name,
              std::string_view filter, bool fallback) {
  const Value* v = args.get(index, name);
  if (!v || v->is_undefined()) return fallback;
  if (!v->is_bool())
    throw TemplateError("filter '" + std::string(filter) + "': '" + std::string(name) +
                        "' must be a boolean");
  return v->as_bool();
}

// JavaScript's parseInt(s, 10): leading whitespace, a sign, then as many digits as there are.
std::optional<int64_t> parse_int_prefix(std::string_view s) {
  s = trim_start(s);
  std::size_t i = (!s.empty() && (s[0] == '+' || s[0] == '-')) ? 1 : 0;
  std::size_t end = i;
  while (end < s.size() && s[end] >= '0' && s[end] <= '9') ++end;
  if (end == i) return std::nullopt;
  int64_t v = 0;
  auto res = std::from_chars(s.data() + i, s.data() + end, v);
  if (res.ec != std::errc())
    throw TemplateError("integer too large: " + std::string(s.substr(0, end)));
  return s[0] == '-' ? -v : v;
}

// JavaScript's parseFloat: the longest prefix that reads as a decimal number.
std::optional<double> parse_float_prefix(std::string_view s) {
  s = trim_start(s);
  const bool negative = !s.empty() && s[0] == '-';
  std::string_view body = (!s.empty() && (s[0] == '+' || s[0] == '-')) ? s.substr(1) : s;
  if (body.starts_with("Infinity")) return negative ? -INFINITY : INFINITY;
  if (body.empty() || !((body[0] >= '0' && body[0] <= '9') || body[0] == '.')) return std::nullopt;
  double v = 0;
  auto res = std::from_chars(body.data(), body.data() + body.size(), v, std::chars_format::general);
  if (res.ec == std::errc::invalid_argument) return std::nullopt;
  if (res.ec == std::errc::result_out_of_range) v = INFINITY;
  return negative ? -v : v;
}

// A dotted attribute path ("a.b.0") into dicts, namespaces and lists.
Value attribute_path(const Value& item, std::string_view path) {
  Value v = item;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = path.find('.', start);
    const std::string_view part =
        path.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (v.is_object()) {
      const Value* found = v.obj().find(part);
      v = found ? *found : Value();
    } else if (v.is_array()) {
      int64_t index = -1;
      auto res = std::from_chars(part.data(), part.data() + part.size(), index);
      if (res.ec != std::errc() || index < 0 || index >= static_cast<int64_t>(v.items().size()))
        return Value();
      v = Value(v.items()[static_cast<std::size_t>(index)]);
    } else {
      return Value();
    }
    if (dot == std::string_view::npos) return v;
    start = dot + 1;
  }
}

std::string attribute_arg(const Value& v, std::string_view filter) {
  if (v.is_string()) return v.str();
  if (v.is_int()) return std::to_string(v.as_int());
  throw TemplateError("filter '" + std::string(filter) + "': attribute must be a string");
}

// Arguments after the first `skip` positional ones, for a filter or test applied per item.
CallArgs rest_of(const CallArgs& args, std::size_t skip) {
  CallArgs rest;
  for (std::size_t i = skip; i < args.positional.size(); ++i)
    rest.positional.push_back(args.positional[i]);
  return rest;
}

Value sort_filter(const Value& list, const CallArgs& args) {
  const bool reverse = bool_arg(args, 0, "reverse", "sort", false);
  const bool case_sensitive = bool_arg(args, 1, "case_sensitive", "sort", false);
  const Value* attribute = args.get(2, "attribute");
  std::optional<std::string> path;
  if (attribute && !attribute->is_none()) path = attribute_arg(*attribute, "sort");
  std::vector<Value> items = list.items();
  std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
    const int c =
        path ? compare_values(attribute_path(a, *path), attribute_path(b, *path), case_sensitive)
             : compare_values(a, b, case_sensitive);
    return reverse ? c > 0 : c < 0;
  });
  return Value::array(std::move(items));
}

Value select_filter(std::string_view name, const Value& list, const CallArgs& args) {
  const bool by_attribute = name == "selectattr" || name == "rejectattr";
  const bool keep_passing = name == "select" || name == "selectattr";
  std::optional<std::string> attribute;
  std::size_t next = 0;
  if (by_attribute) {
    if (args.positional.empty())
      throw TemplateError("filter '" + std::string(name) + "' needs an attribute name");
    attribute = attribute_arg(args.positional[0], name);
    next = 1;
  }
  std::optional<std::string> test;
  if (next < args.positional.size()) {
    if (!args.positional[next].is_string())
      throw TemplateError("filter '" + std::string(name) + "': the test name must be a string");
    test = args.positional[next].str();
  }
  const CallArgs test_args = rest_of(args, next + 1);
  std::vector<Value> kept;
  for (const auto& item : list.items()) {
    bool passes;
    if (by_attribute) {
      if (!item.is_object())
        throw TemplateError("filter '" + std::string(name) + "' needs a list of dicts");
      const Value* v = item.obj().find(*attribute);
      passes = v && (test ? apply_test(*test, *v, test_args) : truthy(*v));
    } else {
      passes = test ? apply_test(*test, item, test_args) : truthy(item);
    }
    if (passes == keep_passing) kept.push_back(item);
  }
  return Value::array(std::move(kept));
}

Value map_filter(Interpreter& in, const Value& list, CallArgs& args, Scope& scope) {
  std::vector<Value> mapped;
  mapped.reserve(list.items().size());
  if (const Value* attribute = args.keyword("attribute")) {
    const std::string path = attribute_arg(*attribute, "map");
    const Value* fallback = args.keyword("default");
    for (const auto& item : list.items()) {
      if (!item.is_object())
        throw TemplateError("filter 'map' with an attribute needs a list of dicts");
      Value v = attribute_path(item, path);
      mapped.push_back(v.is_undefined() && fallback ? *fallback : std::move(v));
    }
    return Value::array(std::move(mapped));
  }
  if (args.positional.empty() || !args.positional[0].is_string())
    throw TemplateError("filter 'map' needs attribute= or the name of a filter");
  const std::string filter = args.positional[0].str();
  for (const auto& item : list.items()) {
    CallArgs item_args = rest_of(args, 1);
    mapped.push_back(apply_filter(in, filter, item, item_args, scope));
  }
  return Value::array(std::move(mapped));
}

Value join_filter(Interpreter& in, const Value& operand, const CallArgs& args) {
  const Value* sep = args.get(0, "d");
  if (!sep) sep = args.keyword("separator");
  if (sep && !sep->is_string())
    throw TemplateError("filter 'join': the separator must be a string");
  const Value* attribute = args.get(1, "attribute");
  std::vector<std::string> pieces;
  if (operand.is_string()) {
    pieces = split_characters(operand.str());
  } else {
    for (const auto& item : operand.items())
      pieces.push_back(
          join_piece(attribute ? attribute_path(item, attribute_arg(*attribute, "join")) : item));
  }
  std::string out;
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    if (i && sep) out += sep->str();
    out += pieces[i];
    in.check_string_size(out.size());
  }
  return Value::string(std::move(out));
}

Value indent_filter(Interpreter& in, const std::string& s, const CallArgs& args) {
  std::string unit(4, ' ');
  if (const Value* width = args.get(0, "width")) {
    if (width->is_int()) {
      if (width->as_int() < 0) throw TemplateError("filter 'indent': negative width");
      in.check_string_size(
          static_cast<std::size_t>(std::min<int64_t>(width->as_int(), INT64_MAX / 2)));
      unit.assign(static_cast<std::size_t>(width->as_int()), ' ');
    } else if (width->is_string()) {
      unit = width->str();
    } else {
      throw TemplateError("filter 'indent': width must be a number or a string");
    }
  }
  const bool first = bool_arg(args, 1, "first", "indent", false);
  const bool blank = bool_arg(args, 2, "blank", "indent", false);
  std::string out;
  std::size_t start = 0, line = 0;
  while (true) {
    const std::size_t nl = s.find('\n', start);
    const std::string_view text =
        std::string_view(s).substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    if (!((line == 0 && !first) || (text.empty() && !blank))) out += unit;
    out += text;
    in.check_string_size(out.size());
    if (nl == std::string::npos) break;
    out += '\n';
    start = nl + 1;
    ++line;
  }
  return Value::string(std::move(out));
}

Value to_int(const Value& operand, const CallArgs& args) {
  const Value* fallback = args.get(0, "default");
  const Value def = fallback ? *fallback : Value::integer(0);
  if (operand.is_int()) return operand;
  if (operand.is_float()) {
    const double f = std::floor(operand.as_float());
    if (!std::isfinite(f) || std::fabs(f) >= 9.2e18) return def;
    return Value::integer(static_cast<int64_t>(f));
  }
  if (operand.is_bool()) return Value::integer(operand.as_bool() ? 1 : 0);
  if (operand.is_string()) {
    auto v = parse_int_prefix(operand.str());
    return v ? Value::integer(*v) : def;
  }
  return def;
}

Value to_float(const Value& operand, const CallArgs& args) {
  const Value* fallback = args.get(0, "default");
  const Value def = fallback ? *fallback : Value::number(0);
  if (operand.is_number()) return Value::number(operand.as_double());
  if (operand.is_bool()) return Value::number(operand.as_bool() ? 1 : 0);
  if (operand.is_string()) {
    auto v = parse_float_prefix(operand.str());
    return v ? Value::number(*v) : def;
  }
  return def;
}

Value round_filter(const Value& operand, const CallArgs& args) {
  if (!operand.is_number()) wrong_type("round", operand);
  int64_t precision = 0;
  if (const Value* p = args.get(0, "precision")) {
    if (!p->is_int()) throw TemplateError("filter 'round': precision must be an integer");
    precision = std::clamp<int64_t>(p->as_int(), -300, 300);
  }
  std::string method = "common";
  if (const Value* m = args.get(1, "method")) {
    if (!m->is_string()) throw TemplateError("filter 'round': method must be a string");
    method = m->str();
  }
  const double scale = std::pow(10.0, static_cast<double>(precision));
  const double x = operand.as_double() * scale;
  double r;
  if (method == "common")
    r = std::round(x);
  else if (method == "ceil")
    r = std::ceil(x);
  else if (method == "floor")
    r = std::floor(x);
  else
    throw TemplateError("filter 'round': method must be common, ceil or floor");
  return Value::number(r / scale);
}

Value min_max(std::string_view name, const Value& list, const CallArgs& args) {
  if (list.items().empty()) return Value();
  const bool case_sensitive = bool_arg(args, 0, "case_sensitive", name, false);
  const Value* attribute = args.get(1, "attribute");
  const auto key = [&](const Value& v) {
    return attribute ? attribute_path(v, attribute_arg(*attribute, name)) : v;
  };
  const Value* best = &list.items()[0];
  for (const auto& item : list.items()) {
    const int c = compare_values(key(item), key(*best), case_sensitive);
    if (name == "min" ? c < 0 : c > 0) best = &item;
  }
  return *best;
}

Value sum_filter(const Value& list, const CallArgs& args) {
  const Value* attribute = args.get(0, "attribute");
  const Value* start = args.get(1, "start");
  Value total = start ? *start : Value::integer(0);
  for (const auto& item : list.items()) {
    const Value v = attribute ? attribute_path(item, attribute_arg(*attribute, "sum")) : item;
    if (!v.is_number() || !total.is_number()) throw TemplateError("filter 'sum' needs numbers");
    if (v.is_int() && total.is_int()) {
      int64_t r = 0;
      if (__builtin_add_overflow(total.as_int(), v.as_int(), &r))
        throw TemplateError("integer overflow in sum");
      total = Value::integer(r);
    } else {
      total = Value::number(total.as_double() + v.as_double());
    }
  }
  return total;
}

Value string_filter(const Value& operand) {
  if (operand.is_undefined()) return Value::string("");
  if (operand.is_none()) return Value::string("None");
  if (operand.is_string()) return operand;
  return Value::string(display_string(operand));
}

JsonOptions json_options(const CallArgs& args) {
  JsonOptions o;
  if (const Value* indent = args.get(0, "indent")) {
    if (indent->is_int())
      o.indent = indent->as_int();
    else if (!indent->is_none())
      throw TemplateError("filter 'tojson': indent must be an integer");
  }
  o.ensure_ascii = bool_arg(args, 99, "ensure_ascii", "tojson", false);
  o.sort_keys = bool_arg(args, 99, "sort_keys", "tojson", false);
  if (const Value* sep = args.keyword("separators"); sep && !sep->is_none()) {
    if (!sep->is_array() || sep->items().size() != 2 || !sep->items()[0].is_string() ||
        !sep->items()[1].is_string())
      throw TemplateError("filter 'tojson': separators must be two strings");
    o.separators = std::make_pair(sep->items()[0].str(), sep->items()[1].str());
  }
  if (o.indent && *o.indent > 1000) throw TemplateError("filter 'tojson': indent is too large");
  return o;
}

}  // namespace

Value apply_filter(Interpreter& in, std::string_view name, const Value& operand, CallArgs& args,
                   Scope& scope) {
  // Filters that take any value.
  if (name == "safe") return operand;
  if (name == "tojson") {
    std::string json = to_json(operand, json_options(args));
    in.check_string_size(json.size());
    return Value::string(std::move(json));
  }
  if (name == "default" || name == "d") {
    const Value* fallback = args.get(0, "default_value");
    const bool boolean = bool_arg(args, 1, "boolean", name, false);
    if (operand.is_undefined() || (boolean && !truthy(operand)))
      return fallback ? *fallback : Value::string("");
    return operand;
  }
  if (name == "string") return string_filter(operand);
  if (name == "int") return to_int(operand, args);
  if (name == "float") return to_float(operand, args);
  if (name == "bool") return Value::boolean(truthy(operand));
  if (name == "length" || name == "count") {
    if (operand.is_array()) return Value::integer(static_cast<int64_t>(operand.items().size()));
    if (operand.is_string())
      return Value::integer(static_cast<int64_t>(count_characters(operand.str())));
    if (operand.is_object())
      return Value::integer(static_cast<int64_t>(operand.obj().entries.size()));
    if (operand.is_undefined()) return Value::integer(0);
    wrong_type(name, operand);
  }

  if (operand.is_string()) {
    const std::string& s = operand.str();
    if (name == "trim") {
      // trim(chars): Python's strip(chars); without chars, JavaScript whitespace.
      if (const Value* chars = args.get(0, "chars"); chars && chars->is_string()) {
        const std::size_t b = s.find_first_not_of(chars->str());
        if (b == std::string::npos) return Value::string("");
        return Value::string(s.substr(b, s.find_last_not_of(chars->str()) - b + 1));
      }
      return Value::string(std::string(trim(s)));
    }
    if (name == "upper") return Value::string(to_upper(s));
    if (name == "lower") return Value::string(to_lower(s));
    if (name == "title") return Value::string(title_case(s));
    if (name == "capitalize") return Value::string(capitalize(s));
    if (name == "indent") return indent_filter(in, s, args);
    if (name == "join") return join_filter(in, operand, args);
    if (name == "replace") {
      const Value* from = args.get(0, "old");
      const Value* to = args.get(1, "new");
      if (!from || !to || !from->is_string() || !to->is_string())
        throw TemplateError("filter 'replace' needs two strings");
      const Value* count = args.get(2, "count");
      std::optional<int64_t> n;
      if (count && count->is_int())
        n = count->as_int();
      else if (count && !count->is_none())
        throw TemplateError("filter 'replace': count must be an integer");
      return Value::string(replace_all(in, s, from->str(), to->str(), n));
    }
    if (name == "first" || name == "last" || name == "reverse" || name == "list") {
      auto chars = split_characters(s);
      if (name == "first") return chars.empty() ? Value() : Value::string(chars.front());
      if (name == "last") return chars.empty() ? Value() : Value::string(chars.back());
      if (name == "reverse") {
        std::string out;
        for (auto it = chars.rbegin(); it != chars.rend(); ++it) out += *it;
        return Value::string(std::move(out));
      }
      std::vector<Value> items;
      for (auto& c : chars) items.push_back(Value::string(std::move(c)));
      return Value::array(std::move(items));
    }
    if (name == "wordcount") {
      std::size_t words = 0;
      bool in_word = false;
      for (std::size_t pos = 0; pos < s.size();) {
        const bool space = is_js_space(next_code_point(s, pos));
        if (!space && !in_word) ++words;
        in_word = !space;
      }
      return Value::integer(static_cast<int64_t>(words));
    }
    wrong_type(name, operand);
  }

  if (operand.is_array()) {
    const auto& items = operand.items();
    if (name == "list") return Value::array(items);
    if (name == "first") return items.empty() ? Value() : items.front();
    if (name == "last") return items.empty() ? Value() : items.back();
    if (name == "reverse") return Value::array(std::vector<Value>(items.rbegin(), items.rend()));
    if (name == "sort") return sort_filter(operand, args);
    if (name == "join") return join_filter(in, operand, args);
    if (name == "unique") {
      std::vector<Value> seen;
      for (const auto& item : items)
        if (std::none_of(seen.begin(), seen.end(),
                         [&](const Value& s) { return strict_equal(s, item); }))
          seen.push_back(item);
      return Value::array(std::move(seen));
    }
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr")
      return select_filter(name, operand, args);
    if (name == "map") return map_filter(in, operand, args, scope);
    if (name == "min" || name == "max") return min_max(name, operand, args);
    if (name == "sum") return sum_filter(operand, args);
    wrong_type(name, operand);
  }

  if (operand.is_number()) {
    if (name == "abs") {
      if (operand.is_float()) return Value::number(std::fabs(operand.as_float()));
      if (operand.as_int() == INT64_MIN) throw TemplateError("integer overflow in abs");
      return Value::integer(operand.as_int() < 0 ? -operand.as_int() : operand.as_int());
    }
    if (name == "round") return round_filter(operand, args);
    wrong_type(name, operand);
  }

  if (operand.is_dict()) {
    if (name == "items") return dict_items(operand);
    if (name == "list" || name == "keys" || name == "values" || name == "dictsort") {
      std::vector<Value> out;
      if (name == "dictsort") {
        std::vector<Value> pairs = dict_items(operand).items();
        const bool cs = bool_arg(args, 0, "case_sensitive", name, false);
        const Value* by = args.get(1, "by");
        const bool rev = bool_arg(args, 2, "reverse", name, false);
        const std::size_t column = by && by->is_string() && by->str() == "value" ? 1 : 0;
        std::stable_sort(pairs.begin(), pairs.end(), [&](const Value& a, const Value& b) {
          const int c = compare_values(a.items()[column], b.items()[column], cs);
          return rev ? c > 0 : c < 0;
        });
        return Value::array(std::move(pairs));
      }
      for (const auto& [k, v] : operand.obj().entries)
        out.push_back(name == "values" ? v : Value::string(k));
      return Value::array(std::move(out));
    }
    wrong_type(name, operand);
  }

  if (operand.is_undefined() && (name == "items" || name == "list")) return Value::array({});
  wrong_type(name, operand);
}

bool apply_test(std::string_view name, const Value& v, const CallArgs& args) {
  const auto arg = [&]() -> const Value& {
    if (args.positional.empty())
      throw TemplateError("test '" + std::string(name) + "' needs an argument");
    return args.positional[0];
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "iterable") return v.is_array() || v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "sequence") return v.is_array() || v.is_dict() || v.is_string();
  if (name == "callable") return v.is_function();
  if (name == "lower") return v.is_string() && v.str() == to_lower(v.str());
  if (name == "upper") return v.is_string() && v.str() == to_upper(v.str());
  if (name == "odd" || name == "even") {
    if (!v.is_int())
      throw TemplateError("test '" + std::string(name) + "' needs an integer, got a " +
                          kind_name(v));
    return (v.as_int() % 2 != 0) == (name == "odd");
  }
  if (name == "divisibleby") {
    const Value& d = arg();
    if (!v.is_int() || !d.is_int()) throw TemplateError("test 'divisibleby' needs integers");
    if (d.as_int() == 0) throw TemplateError("test 'divisibleby': division by zero");
    return d.as_int() == -1 || v.as_int() % d.as_int() == 0;
  }
  if (name == "eq" || name == "equalto" || name == "==" || name == "sameas") {
    return strict_equal(v, args.positional.empty() ? Value() : args.positional[0]);
  }
  if (name == "ne" || name == "!=") return !strict_equal(v, arg());
  if (name == "lt" || name == "lessthan" || name == "<") return compare_values(v, arg(), true) < 0;
  if (name == "le" || name == "<=") return compare_values(v, arg(), true) <= 0;
  if (name == "gt" || name == "greaterthan" || name == ">")
    return compare_values(v, arg(), true) > 0;
  if (name == "ge" || name == ">=") return compare_values(v, arg(), true) >= 0;
  if (name == "in") {
    const Value& container = arg();
    if (container.is_array())
      return std::any_of(container.items().begin(), container.items().end(),
                         [&](const Value& item) { return strict_equal(item, v); });
    if (container.is_string() && v.is_string())
      return container.str().find(v.str()) != std::string::npos;
    if (container.is_dict() && v.is_string()) return container.obj().find(v.str()) != nullptr;
    throw TemplateError(std::string("test 'in' cannot look inside a ") + kind_name(container));
  }
  if (name == "escaped") return false;
  throw TemplateError("unknown test '" + std::string(name) + "'");
}

}  // namespace lora::data::jinja
