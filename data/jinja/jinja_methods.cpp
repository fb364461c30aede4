// Attribute and index access, and the methods of strings and dicts.
#include <algorithm>

#include "data/jinja/jinja_builtins.h"
#include "data/jinja/jinja_text.h"

namespace lora::data::jinja {

namespace {

std::size_t byte_to_char_index(std::string_view s, std::size_t byte) {
  return count_characters(s.substr(0, byte));
}

std::string char_at(std::string_view s, int64_t index) {
  std::vector<std::string> chars = split_characters(s);
  const auto n = static_cast<int64_t>(chars.size());
  if (index < 0) index += n;
  if (index < 0 || index >= n) return {};
  return chars[static_cast<std::size_t>(index)];
}

const Value& required_arg(const CallArgs& args, std::size_t index, std::string_view name,
                          std::string_view method) {
  const Value* v = args.get(index, name);
  if (!v)
    throw TemplateError(std::string(method) + "() is missing its '" + std::string(name) +
                        "' argument");
  return *v;
}

const std::string& string_arg(const CallArgs& args, std::size_t index, std::string_view name,
                              std::string_view method) {
  const Value& v = required_arg(args, index, name, method);
  if (!v.is_string())
    throw TemplateError(std::string(method) + "() needs a string for '" + std::string(name) +
                        "', got a " + kind_name(v));
  return v.str();
}

std::optional<int64_t> optional_int_arg(const CallArgs& args, std::size_t index,
                                        std::string_view name, std::string_view method) {
  const Value* v = args.get(index, name);
  if (!v || v->is_none() || v->is_undefined()) return std::nullopt;
  if (!v->is_int())
    throw TemplateError(std::string(method) + "() needs an integer for '" + std::string(name) +
                        "', got a " + kind_name(*v));
  return v->as_int();
}

Value string_list(std::vector<std::string> parts) {
  std::vector<Value> items;
  items.reserve(parts.size());
  for (auto& p : parts) items.push_back(Value::string(std::move(p)));
  return Value::array(std::move(items));
}

// Python's str.split / str.rsplit with an explicit separator.
std::vector<std::string> split_on(std::string_view s, std::string_view sep, int64_t maxsplit,
                                  bool from_right) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (std::size_t pos; (pos = s.find(sep, start)) != std::string_view::npos;) {
    parts.emplace_back(s.substr(start, pos - start));
    start = pos + sep.size();
  }
  parts.emplace_back(s.substr(start));
  if (maxsplit < 0 || parts.size() <= static_cast<std::size_t>(maxsplit) + 1) return parts;
  const auto keep = static_cast<std::size_t>(maxsplit);
  std::vector<std::string> merged;
  if (!from_right) {
    merged.assign(parts.begin(), parts.begin() + static_cast<std::ptrdiff_t>(keep));
    std::string rest = parts[keep];
    for (std::size_t i = keep + 1; i < parts.size(); ++i) rest += std::string(sep) + parts[i];
    merged.push_back(std::move(rest));
  } else {
    const std::size_t head = parts.size() - keep;
    std::string rest = parts[0];
    for (std::size_t i = 1; i < head; ++i) rest += std::string(sep) + parts[i];
    merged.push_back(std::move(rest));
    merged.insert(merged.end(), parts.begin() + static_cast<std::ptrdiff_t>(head), parts.end());
  }
  return merged;
}

// Whitespace split: runs of whitespace separate words; leading whitespace is ignored, and the
// last piece (when maxsplit is reached) keeps everything after its start.
std::vector<std::string> split_whitespace(std::string_view s, int64_t maxsplit) {
  std::vector<std::string> parts;
  const std::string_view text = trim_start(s);
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t next = pos;
    if (is_js_space(next_code_point(text, next))) {
      pos = next;
      continue;
    }
    if (maxsplit >= 0 && parts.size() >= static_cast<std::size_t>(maxsplit)) {
      parts.emplace_back(text.substr(pos));
      break;
    }
    std::size_t end = pos;
    while (end < text.size()) {
      std::size_t after = end;
      if (is_js_space(next_code_point(text, after))) break;
      end = after;
    }
    parts.emplace_back(text.substr(pos, end - pos));
    pos = end;
  }
  return parts;
}

std::string python_str(const Value& v) {
  if (v.is_none()) return "None";
  if (v.is_bool()) return v.as_bool() ? "True" : "False";
  if (v.is_undefined()) return "";
  return display_string(v);
}

// str.format with {} / {0} / {name} fields and {{ }} escapes (no format specs).
std::string python_format(Interpreter& in, std::string_view fmt, const CallArgs& args) {
  std::string out;
  std::size_t auto_index = 0;
  for (std::size_t i = 0; i < fmt.size(); ++i) {
    const char c = fmt[i];
    if (c == '}') {
      if (i + 1 < fmt.size() && fmt[i + 1] == '}') ++i;
      out += '}';
      continue;
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < fmt.size() && fmt[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    const std::size_t close = fmt.find('}', i);
    if (close == std::string_view::npos) throw TemplateError("format(): unmatched '{'");
    const std::string_view field = fmt.substr(i + 1, close - i - 1);
    if (field.find_first_of(":!") != std::string_view::npos)
      throw TemplateError("format(): format specs are not supported");
    const Value* v = nullptr;
    if (field.empty()) {
      v = auto_index < args.positional.size() ? &args.positional[auto_index] : nullptr;
      ++auto_index;
    } else if (std::all_of(field.begin(), field.end(),
                           [](char d) { return d >= '0' && d <= '9'; })) {
      const auto index = std::stoull(std::string(field));
      v = index < args.positional.size() ? &args.positional[index] : nullptr;
    } else {
      v = args.keyword(field);
    }
    if (!v) throw TemplateError("format(): no argument for {" + std::string(field) + "}");
    out += python_str(*v);
    in.check_string_size(out.size());
    i = close;
  }
  return out;
}

bool all_chars(std::string_view s, bool (*pred)(char)) {
  return !s.empty() && std::all_of(s.begin(), s.end(), pred);
}

Value call_string_method(Interpreter& in, const std::string& s, std::string_view name,
                         CallArgs& args) {
  // strip/lstrip/rstrip remove whitespace and ignore a `chars` argument: that is what the
  // reference renderer does, and the chat goldens depend on it.
  if (name == "strip") return Value::string(std::string(trim(s)));
  if (name == "lstrip") return Value::string(std::string(trim_start(s)));
  if (name == "rstrip") return Value::string(std::string(trim_end(s)));
  if (name == "upper") return Value::string(to_upper(s));
  if (name == "lower") return Value::string(to_lower(s));
  if (name == "title") return Value::string(title_case(s));
  if (name == "capitalize") return Value::string(capitalize(s));
  if (name == "startswith" || name == "endswith") {
    const Value& pattern = required_arg(args, 0, "prefix", name);
    const auto matches = [&](const Value& p) {
      if (!p.is_string()) throw TemplateError(std::string(name) + "() needs strings");
      const std::string& t = p.str();
      if (t.size() > s.size()) return false;
      return name == "startswith" ? s.compare(0, t.size(), t) == 0
                                  : s.compare(s.size() - t.size(), t.size(), t) == 0;
    };
    if (pattern.is_array())
      return Value::boolean(std::any_of(pattern.items().begin(), pattern.items().end(), matches));
    return Value::boolean(matches(pattern));
  }
  if (name == "split" || name == "rsplit") {
    const Value* sep = args.get(0, "sep");
    const int64_t maxsplit = optional_int_arg(args, 1, "maxsplit", name).value_or(-1);
    if (!sep || sep->is_none()) {
      if (name == "rsplit" && maxsplit >= 0) {
        auto words = split_whitespace(s, -1);
        if (words.size() > static_cast<std::size_t>(maxsplit))
          throw TemplateError("rsplit() with maxsplit and no separator is not supported");
        return string_list(std::move(words));
      }
      return string_list(split_whitespace(s, maxsplit));
    }
    if (!sep->is_string()) throw TemplateError(std::string(name) + "() separator must be a string");
    if (sep->str().empty()) throw TemplateError(std::string(name) + "(): empty separator");
    return string_list(split_on(s, sep->str(), maxsplit, name == "rsplit"));
  }
  if (name == "replace") {
    const std::string& from = string_arg(args, 0, "old", name);
    const std::string& to = string_arg(args, 1, "new", name);
    return Value::string(replace_all(in, s, from, to, optional_int_arg(args, 2, "count", name)));
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex") {
    const std::string& sub = string_arg(args, 0, "sub", name);
    const std::size_t pos = name[0] == 'r' ? s.rfind(sub) : s.find(sub);
    if (pos == std::string::npos) {
      if (name.ends_with("index"))
        throw TemplateError(std::string(name) + "(): substring not found");
      return Value::integer(-1);
    }
    return Value::integer(static_cast<int64_t>(byte_to_char_index(s, pos)));
  }
  if (name == "count") {
    const std::string& sub = string_arg(args, 0, "sub", name);
    if (sub.empty()) return Value::integer(static_cast<int64_t>(count_characters(s) + 1));
    int64_t n = 0;
    for (std::size_t pos = s.find(sub); pos != std::string::npos;
         pos = s.find(sub, pos + sub.size()))
      ++n;
    return Value::integer(n);
  }
  if (name == "format") return Value::string(python_format(in, s, args));
  if (name == "join") {
    const Value& list = required_arg(args, 0, "iterable", name);
    if (!list.is_array()) throw TemplateError("join() needs a list");
    std::string out;
    for (std::size_t i = 0; i < list.items().size(); ++i) {
      if (!list.items()[i].is_string()) throw TemplateError("join() needs a list of strings");
      if (i) out += s;
      out += list.items()[i].str();
      in.check_string_size(out.size());
    }
    return Value::string(std::move(out));
  }
  if (name == "splitlines") {
    std::vector<std::string> lines;
    std::size_t start = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (s[i] != '\n' && s[i] != '\r') continue;
      lines.push_back(s.substr(start, i - start));
      if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
      start = i + 1;
    }
    if (start < s.size()) lines.push_back(s.substr(start));
    return string_list(std::move(lines));
  }
  if (name == "removeprefix" || name == "removesuffix") {
    const std::string& affix = string_arg(args, 0, "affix", name);
    if (name == "removeprefix" && s.starts_with(affix))
      return Value::string(s.substr(affix.size()));
    if (name == "removesuffix" && s.ends_with(affix))
      return Value::string(s.substr(0, s.size() - affix.size()));
    return Value::string(s);
  }
  if (name == "isdigit")
    return Value::boolean(all_chars(s, [](char c) { return c >= '0' && c <= '9'; }));
  if (name == "isalpha")
    return Value::boolean(
        all_chars(s, [](char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }));
  if (name == "isalnum")
    return Value::boolean(all_chars(s, [](char c) {
      return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
    }));
  if (name == "isspace") return Value::boolean(!s.empty() && trim(s).empty());
  if (name == "islower") return Value::boolean(s != to_upper(s) && s == to_lower(s));
  if (name == "isupper") return Value::boolean(s != to_lower(s) && s == to_upper(s));
  throw TemplateError("strings have no method '" + std::string(name) + "'");
}

bool is_string_method(std::string_view name) {
  static constexpr std::string_view kNames[] = {
      "strip",        "lstrip",   "rstrip",  "upper",   "lower",   "title",      "capitalize",
      "startswith",   "endswith", "split",   "rsplit",  "replace", "find",       "rfind",
      "index",        "rindex",   "count",   "format",  "join",    "splitlines", "removeprefix",
      "removesuffix", "isdigit",  "isalpha", "isalnum", "isspace", "islower",    "isupper"};
  return std::find(std::begin(kNames), std::end(kNames), name) != std::end(kNames);
}

bool is_dict_method(std::string_view name) {
  return name == "get" || name == "items" || name == "keys" || name == "values" ||
         name == "dictsort";
}

Value call_dict_method(const Value& dict, std::string_view name, CallArgs& args) {
  const ObjectData& obj = dict.obj();
  if (name == "get") {
    const Value& key = required_arg(args, 0, "key", name);
    if (!key.is_string())
      throw TemplateError(std::string("dict keys are strings, got a ") + kind_name(key));
    if (const Value* v = obj.find(key.str())) return *v;
    const Value* fallback = args.get(1, "default");
    return fallback ? *fallback : Value::none();
  }
  if (name == "items") return dict_items(dict);
  if (name == "keys") {
    std::vector<Value> keys;
    for (const auto& [k, v] : obj.entries) keys.push_back(Value::string(k));
    return Value::array(std::move(keys));
  }
  if (name == "values") {
    std::vector<Value> values;
    for (const auto& [k, v] : obj.entries) values.push_back(v);
    return Value::array(std::move(values));
  }
  // dictsort(case_sensitive=false, by='key', reverse=false)
  const Value* case_sensitive = args.get(0, "case_sensitive");
  const Value* by = args.get(1, "by");
  const Value* reverse = args.get(2, "reverse");
  if ((case_sensitive && !case_sensitive->is_bool()) || (reverse && !reverse->is_bool()))
    throw TemplateError("dictsort(): case_sensitive and reverse must be booleans");
  if (by && !(by->is_string() && (by->str() == "key" || by->str() == "value")))
    throw TemplateError("dictsort(): by must be 'key' or 'value'");
  const bool cs = case_sensitive && case_sensitive->as_bool();
  const bool rev = reverse && reverse->as_bool();
  const std::size_t column = by && by->str() == "value" ? 1 : 0;
  std::vector<Value> pairs = dict_items(dict).items();
  std::stable_sort(pairs.begin(), pairs.end(), [&](const Value& a, const Value& b) {
    const int c = compare_values(a.items()[column], b.items()[column], cs);
    return rev ? c > 0 : c < 0;
  });
  return Value::array(std::move(pairs));
}

Value bound_method(const Value& receiver, std::string_view name) {
  return Value::function(std::string(name), [receiver, method = std::string(name)](
                                                Interpreter& in, CallArgs& args, Scope&) {
    if (receiver.is_string()) return call_string_method(in, receiver.str(), method, args);
    return call_dict_method(receiver, method, args);
  });
}

}  // namespace

std::string capitalize(std::string_view s) {
  if (s.empty()) return {};
  std::size_t first = 0;
  next_code_point(s, first);
  return to_upper(s.substr(0, first)) + std::string(s.substr(first));
}

std::string replace_all(Interpreter& in, std::string_view s, std::string_view from,
                        std::string_view to, std::optional<int64_t> count) {
  int64_t remaining = count && *count >= 0 ? *count : INT64_MAX;
  std::string out;
  if (from.empty()) {  // inserts `to` before every character and at the end
    for (std::size_t pos = 0;;) {
      if (remaining > 0) {
        out += to;
        --remaining;
      }
      in.check_string_size(out.size());
      if (pos >= s.size()) break;
      const std::size_t start = pos;
      next_code_point(s, pos);
      out += s.substr(start, pos - start);
    }
    return out;
  }
  std::size_t start = 0;
  for (std::size_t pos; remaining > 0 && (pos = s.find(from, start)) != std::string_view::npos;
       --remaining) {
    out += s.substr(start, pos - start);
    out += to;
    start = pos + from.size();
    in.check_string_size(out.size());
  }
  out += s.substr(start);
  in.check_string_size(out.size());
  return out;
}

Value dict_items(const Value& dict) {
  std::vector<Value> pairs;
  pairs.reserve(dict.obj().entries.size());
  for (const auto& [k, v] : dict.obj().entries)
    pairs.push_back(Value::array({Value::string(k), v}));
  return Value::array(std::move(pairs));
}

Value get_member(const Value& object, const Value& key) {
  if (object.is_object()) {
    if (!key.is_string())
      throw TemplateError(std::string("dict keys are strings, cannot look up a ") + kind_name(key));
    if (const Value* v = object.obj().find(key.str())) return *v;
    if (object.is_dict() && is_dict_method(key.str())) return bound_method(object, key.str());
    return Value();
  }
  if (object.is_array() || object.is_string()) {
    if (key.is_int()) {
      if (object.is_string()) {
        std::string c = char_at(object.str(), key.as_int());
        return c.empty() ? Value() : Value::string(std::move(c));
      }
      const auto n = static_cast<int64_t>(object.items().size());
      const int64_t index = key.as_int() < 0 ? key.as_int() + n : key.as_int();
      if (index < 0 || index >= n) return Value();
      return object.items()[static_cast<std::size_t>(index)];
    }
    if (key.is_string()) {
      if (key.str() == "length")
        return Value::integer(static_cast<int64_t>(
            object.is_array() ? object.items().size() : count_characters(object.str())));
      if (object.is_string() && is_string_method(key.str())) return bound_method(object, key.str());
      return Value();
    }
    throw TemplateError(std::string("cannot index a ") + kind_name(object) + " with a " +
                        kind_name(key));
  }
  if (!key.is_string())
    throw TemplateError(std::string("cannot index a ") + kind_name(object) + " with a " +
                        kind_name(key));
  return Value();  // attributes of numbers, none and undefined are undefined
}

}  // namespace lora::data::jinja
