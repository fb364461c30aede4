// The global names every template sees.
#include <ctime>

#include "data/jinja/jinja_builtins.h"

namespace lora::data::jinja {

namespace {

Value make_namespace(Interpreter& in, CallArgs& args, Scope&) {
  if (args.positional.size() > 1)
    throw TemplateError("namespace() takes at most 1 positional argument");
  std::vector<std::pair<std::string, Value>> entries;
  const auto put = [&](const std::string& key, const Value& v) {
    for (auto& [k, existing] : entries)
      if (k == key) {
        existing = v;
        return;
      }
    entries.emplace_back(key, v);
  };
  if (!args.positional.empty()) {
    const Value& source = args.positional[0];
    if (source.is_dict()) {
      for (const auto& [k, v] : source.obj().entries) put(k, v);
    } else if (source.is_array()) {
      for (const auto& pair : source.items()) {
        if (!pair.is_array() || pair.items().size() != 2 || !pair.items()[0].is_string())
          throw TemplateError("namespace() expects a dict or a list of [key, value] pairs");
        put(pair.items()[0].str(), pair.items()[1]);
      }
    } else {
      throw TemplateError(std::string("namespace() cannot read a ") + kind_name(source));
    }
  }
  for (const auto& [k, v] : args.keywords) put(k, v);
  return in.make_namespace(std::move(entries));
}

Value range(Interpreter& in, CallArgs& args, Scope&) {
  if (!args.keywords.empty()) throw TemplateError("range() takes no keyword arguments");
  const auto& p = args.positional;
  if (p.empty() || p.size() > 3) throw TemplateError("range() takes 1 to 3 integers");
  for (const auto& v : p)
    if (!v.is_int())
      throw TemplateError(std::string("range() needs integers, got a ") + kind_name(v));
  int64_t start = 0, stop = 0, step = 1;
  if (p.size() == 1) {
    stop = p[0].as_int();
  } else {
    start = p[0].as_int();
    stop = p[1].as_int();
    if (p.size() == 3) step = p[2].as_int();
  }
  if (step == 0) throw TemplateError("range() step must not be zero");
  // Count first (in floating point, which cannot overflow) so a huge range fails fast.
  const double count = step > 0 ? (double(stop) - double(start)) / double(step)
                                : (double(start) - double(stop)) / -double(step);
  if (count > double(in.limits().max_items)) in.check_item_count(in.limits().max_items + 1);
  std::vector<Value> items;
  if (step > 0)
    for (int64_t i = start; i < stop; i += step) {
      items.push_back(Value::integer(i));
      if (stop - i <= step) break;
    }
  else
    for (int64_t i = start; i > stop; i += step) {
      items.push_back(Value::integer(i));
      if ((i - stop) + step <= 0) break;
    }
  return Value::array(std::move(items));
}

Value raise_exception(Interpreter&, CallArgs& args, Scope&) {
  std::string message;
  for (std::size_t i = 0; i < args.positional.size(); ++i) {
    if (i) message += ",";
    message += display_string(args.positional[i]);
  }
  throw TemplateError("raise_exception: " + message);
}

// The reference renderer's strftime: %Y %m %d %b %B %H %M %% in local time, English month
// names; anything else is left as written.
Value strftime_now(Interpreter&, CallArgs& args, Scope&) {
  if (args.positional.empty() || !args.positional[0].is_string())
    throw TemplateError("strftime_now() needs a format string");
  static constexpr const char* kMonths[] = {"January",   "February", "March",    "April",
                                            "May",       "June",     "July",     "August",
                                            "September", "October",  "November", "December"};
  const std::time_t now = std::time(nullptr);
  std::tm t{};
  localtime_r(&now, &t);
  const auto pad2 = [](int n) { return (n < 10 ? "0" : "") + std::to_string(n); };
  const std::string& fmt = args.positional[0].str();
  std::string out;
  for (std::size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%' || i + 1 >= fmt.size()) {
      out += fmt[i];
      continue;
    }
    const char c = fmt[i + 1];
    switch (c) {
      case 'Y':
        out += std::to_string(t.tm_year + 1900);
        break;
      case 'm':
        out += pad2(t.tm_mon + 1);
        break;
      case 'd':
        out += pad2(t.tm_mday);
        break;
      case 'b':
        out += std::string(kMonths[t.tm_mon]).substr(0, 3);
        break;
      case 'B':
        out += kMonths[t.tm_mon];
        break;
      case 'H':
        out += pad2(t.tm_hour);
        break;
      case 'M':
        out += pad2(t.tm_min);
        break;
      case '%':
        out += '%';
        break;
      default:
        out += fmt.substr(i, 2);
    }
    ++i;
  }
  return Value::string(std::move(out));
}

Value make_dict(Interpreter&, CallArgs& args, Scope&) {
  if (!args.positional.empty()) throw TemplateError("dict() takes keyword arguments only");
  return Value::object(args.keywords);
}

}  // namespace

void install_globals(Scope& globals) {
  globals.set("true", Value::boolean(true));
  globals.set("false", Value::boolean(false));
  globals.set("none", Value::none());
  globals.set("True", Value::boolean(true));
  globals.set("False", Value::boolean(false));
  globals.set("None", Value::none());
  globals.set("namespace", Value::function("namespace", make_namespace));
  globals.set("range", Value::function("range", range));
  globals.set("raise_exception", Value::function("raise_exception", raise_exception));
  globals.set("strftime_now", Value::function("strftime_now", strftime_now));
  globals.set("dict", Value::function("dict", make_dict));
}

}  // namespace lora::data::jinja
