#include "data/jinja/jinja_parser.h"

#include <charconv>
#include <cmath>
#include <initializer_list>
#include <set>

#include "data/jinja/jinja_lexer.h"

namespace lora::data::jinja {

namespace {

Stmt make_stmt(StmtKind kind, uint32_t pos) {
  Stmt s;
  s.kind = kind;
  s.pos = pos;
  return s;
}

std::string describe(const Token& t) {
  switch (t.type) {
    case TokenType::End:
      return "the end of the template";
    case TokenType::Text:
      return "text";
    case TokenType::String:
      return "a string";
    case TokenType::Number:
      return "number " + t.value;
    case TokenType::Identifier:
      return "'" + t.value + "'";
    case TokenType::Comment:
      return "a comment";
    default:
      return "'" + t.value + "'";
  }
}

// Statements a template may not use here: they read other files or are not supported.
bool is_unsupported_statement(const std::string& name) {
  static constexpr std::string_view kNames[] = {
      "include", "import", "from", "extends", "block", "raw", "with", "autoescape", "do"};
  for (auto n : kNames)
    if (n == name) return true;
  return false;
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens, uint32_t end_pos) : tokens_(std::move(tokens)) {
    end_.type = TokenType::End;
    end_.pos = end_pos;
  }

  Program run() {
    Program program;
    while (!at_end()) {
      if (auto stmt = parse_any()) program.body.push_back(std::move(*stmt));
    }
    return program;
  }

 private:
  struct DepthGuard {
    explicit DepthGuard(Parser& p) : parser(p) {
      if (++parser.depth_ > kMaxParseDepth)
        throw TemplateError(
            "template nests too deeply (more than " + std::to_string(kMaxParseDepth) + " levels)",
            parser.peek().pos);
    }
    ~DepthGuard() { --parser.depth_; }
    DepthGuard(const DepthGuard&) = delete;
    DepthGuard& operator=(const DepthGuard&) = delete;
    Parser& parser;
  };

  const Token& peek(std::size_t ahead = 0) const {
    return current_ + ahead < tokens_.size() ? tokens_[current_ + ahead] : end_;
  }
  bool at_end() const { return current_ >= tokens_.size(); }
  bool is(TokenType type) const { return peek().type == type; }
  bool is_identifier(std::string_view name, std::size_t ahead = 0) const {
    return peek(ahead).type == TokenType::Identifier && peek(ahead).value == name;
  }
  bool is_statement(std::initializer_list<std::string_view> names) const {
    if (!is(TokenType::OpenStatement) || peek(1).type != TokenType::Identifier) return false;
    for (auto n : names)
      if (peek(1).value == n) return true;
    return false;
  }
  [[noreturn]] void fail(const std::string& message, const Token& at) const {
    throw TemplateError(message, at.pos);
  }
  const Token& expect(TokenType type, std::string_view what) {
    const Token& t = peek();
    if (t.type != type) fail("expected " + std::string(what) + ", got " + describe(t), t);
    ++current_;
    return t;
  }
  void expect_identifier(std::string_view name) {
    if (!is_identifier(name))
      fail("expected '" + std::string(name) + "', got " + describe(peek()), peek());
    ++current_;
  }
  ExprPtr node(ExprKind kind, uint32_t pos) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->pos = pos;
    return e;
  }

  // Parses block contents until one of `enders` opens a statement; `opener` names the block
  // for the error when the template ends first.
  std::vector<Stmt> parse_until(std::initializer_list<std::string_view> enders,
                                const std::string& opener, const Token& open_token) {
    std::vector<Stmt> body;
    while (!is_statement(enders)) {
      if (at_end()) {
        std::string names;
        for (auto n : enders) names += (names.empty() ? "{% " : " or {% ") + std::string(n) + " %}";
        fail("missing " + names + " for the " + opener + " opened here", open_token);
      }
      if (auto stmt = parse_any()) body.push_back(std::move(*stmt));
    }
    return body;
  }
  void expect_end_tag(std::string_view name) {
    expect(TokenType::OpenStatement, "{%");
    expect_identifier(name);
    expect(TokenType::CloseStatement, "%}");
  }

  std::optional<Stmt> parse_any() {
    DepthGuard guard(*this);
    const Token& t = peek();
    switch (t.type) {
      case TokenType::Comment:
        ++current_;
        return std::nullopt;
      case TokenType::Text: {
        Stmt s = make_stmt(StmtKind::Text, t.pos);
        s.text = t.value;
        ++current_;
        return s;
      }
      case TokenType::OpenStatement:
        return parse_statement();
      case TokenType::OpenExpression: {
        ++current_;
        Stmt s = make_stmt(StmtKind::Output, t.pos);
        s.expr = parse_expression();
        expect(TokenType::CloseExpression, "}}");
        return s;
      }
      default:
        fail("unexpected " + describe(t), t);
    }
  }

  Stmt parse_statement() {
    const Token& open = expect(TokenType::OpenStatement, "{%");
    const Token& keyword = peek();
    if (keyword.type != TokenType::Identifier)
      fail("expected a statement name after {%, got " + describe(keyword), keyword);
    const std::string name = keyword.value;
    ++current_;
    Stmt s = make_stmt(StmtKind::Text, open.pos);
    if (name == "set") {
      parse_set(s, open);
    } else if (name == "if") {
      parse_if(s, open);
      expect_end_tag("endif");
    } else if (name == "for") {
      parse_for(s, open);
      expect_end_tag("endfor");
    } else if (name == "macro") {
      parse_macro(s, open);
      expect_end_tag("endmacro");
    } else if (name == "call") {
      s.kind = StmtKind::CallBlock;
      if (is(TokenType::OpenParen)) s.params = parse_args(true);
      const Token& callee_token = peek();
      auto callee = parse_primary();
      if (callee->kind != ExprKind::Name) fail("expected a macro name after 'call'", callee_token);
      s.expr = node(ExprKind::Call, callee->pos);
      s.expr->list = parse_args(false);
      s.expr->a = std::move(callee);
      expect(TokenType::CloseStatement, "%}");
      s.body = parse_until({"endcall"}, "call block", open);
      note_special_arguments(s);
      expect_end_tag("endcall");
    } else if (name == "filter") {
      s.kind = StmtKind::FilterBlock;
      s.expr = parse_filter_spec(nullptr);
      expect(TokenType::CloseStatement, "%}");
      s.body = parse_until({"endfilter"}, "filter block", open);
      expect_end_tag("endfilter");
    } else if (name == "break" || name == "continue") {
      s.kind = name == "break" ? StmtKind::Break : StmtKind::Continue;
      expect(TokenType::CloseStatement, "%}");
    } else if (is_unsupported_statement(name)) {
      fail("the '" + name + "' statement is not supported in chat templates", keyword);
    } else {
      fail("unexpected statement '" + name + "'", keyword);
    }
    return s;
  }

  void check_assign_target(const Expr& target) {
    const auto is_name = [](const Expr& e) { return e.kind == ExprKind::Name; };
    if (is_name(target) || target.kind == ExprKind::Attribute) return;
    if (target.kind == ExprKind::Tuple) {
      for (const auto& item : target.list)
        if (!is_name(*item)) fail_at("can only unpack into plain names", *item);
      return;
    }
    fail_at("cannot assign to this expression", target);
  }
  [[noreturn]] void fail_at(const std::string& message, const Expr& e) const {
    throw TemplateError(message, e.pos);
  }

  void parse_set(Stmt& s, const Token& open) {
    s.target = parse_expression_sequence(false);
    check_assign_target(*s.target);
    if (is(TokenType::Equals)) {
      ++current_;
      s.kind = StmtKind::Set;
      s.expr = parse_expression_sequence(false);
    } else {
      s.kind = StmtKind::SetBlock;
      expect(TokenType::CloseStatement, "'=' or %}");
      s.body = parse_until({"endset"}, "set block", open);
      expect(TokenType::OpenStatement, "{%");
      expect_identifier("endset");
    }
    expect(TokenType::CloseStatement, "%}");
  }

  void parse_if(Stmt& s, const Token& open) {
    s.kind = StmtKind::If;
    s.expr = parse_expression();
    expect(TokenType::CloseStatement, "%}");
    s.body = parse_until({"elif", "else", "endif"}, "if", open);
    if (is_statement({"elif"})) {
      const Token& elif = peek();
      current_ += 2;
      Stmt nested = make_stmt(StmtKind::If, elif.pos);
      parse_if(nested, elif);
      s.orelse.push_back(std::move(nested));
    } else if (is_statement({"else"})) {
      current_ += 2;
      expect(TokenType::CloseStatement, "%}");
      s.orelse = parse_until({"endif"}, "if", open);
    }
  }

  void parse_for(Stmt& s, const Token& open) {
    s.kind = StmtKind::For;
    s.target = parse_expression_sequence(true);
    if (s.target->kind != ExprKind::Name && s.target->kind != ExprKind::Tuple)
      fail_at("expected a name or names for the loop variable", *s.target);
    check_assign_target(*s.target);
    if (!is_identifier("in")) fail("expected 'in' after the loop variable", peek());
    ++current_;
    auto iterable = parse_expression();
    if (iterable->kind == ExprKind::Select) {  // for x in items if condition
      s.condition = std::move(iterable->b);
      s.expr = std::move(iterable->a);
    } else {
      s.expr = std::move(iterable);
    }
    expect(TokenType::CloseStatement, "%}");
    s.body = parse_until({"endfor", "else"}, "for loop", open);
    if (is_statement({"else"})) {
      current_ += 2;
      expect(TokenType::CloseStatement, "%}");
      s.orelse = parse_until({"endfor"}, "for loop", open);
    }
  }

  void parse_macro(Stmt& s, const Token& open) {
    s.kind = StmtKind::Macro;
    const Token& name_token = peek();
    auto name = parse_primary();
    if (name->kind != ExprKind::Name) fail("expected a macro name", name_token);
    s.text = name->name;
    s.params = parse_args(true);
    expect(TokenType::CloseStatement, "%}");
    s.body = parse_until({"endmacro"}, "macro", open);
    note_special_arguments(s);
  }

  // Records whether a macro or call block body reads varargs/kwargs.
  void note_special_arguments(Stmt& s) {
    s.uses_varargs = s.uses_kwargs = false;
    const auto visit_expr = [&](const auto& self, const Expr* e) -> void {
      if (!e) return;
      if (e->kind == ExprKind::Name) {
        if (e->name == "varargs") s.uses_varargs = true;
        if (e->name == "kwargs") s.uses_kwargs = true;
      }
      self(self, e->a.get());
      self(self, e->b.get());
      self(self, e->c.get());
      for (const auto& item : e->list) self(self, item.get());
    };
    const auto visit_body = [&](const auto& self, const std::vector<Stmt>& body) -> void {
      for (const auto& st : body) {
        visit_expr(visit_expr, st.expr.get());
        visit_expr(visit_expr, st.condition.get());
        for (const auto& p : st.params) visit_expr(visit_expr, p.get());
        self(self, st.body);
        self(self, st.orelse);
      }
    };
    for (const auto& p : s.params) visit_expr(visit_expr, p.get());
    visit_body(visit_body, s.body);
  }

  ExprPtr parse_expression_sequence(bool primary) {
    const uint32_t pos = peek().pos;
    auto first = primary ? parse_primary() : parse_expression();
    if (!is(TokenType::Comma)) return first;
    auto tuple = node(ExprKind::Tuple, pos);
    tuple->list.push_back(std::move(first));
    while (is(TokenType::Comma)) {
      ++current_;
      tuple->list.push_back(primary ? parse_primary() : parse_expression());
    }
    return tuple;
  }

  ExprPtr parse_expression() {
    DepthGuard guard(*this);
    auto a = parse_or();
    if (is_identifier("if")) {
      const uint32_t pos = peek().pos;
      ++current_;
      auto test = parse_or();
      if (is_identifier("else")) {
        ++current_;
        auto e = node(ExprKind::Ternary, pos);
        e->a = std::move(test);
        e->b = std::move(a);
        e->c = parse_expression();
        return e;
      }
      auto e = node(ExprKind::Select, pos);
      e->a = std::move(a);
      e->b = std::move(test);
      return e;
    }
    return a;
  }

  ExprPtr binary(Op op, uint32_t pos, ExprPtr left, ExprPtr right) {
    auto e = node(ExprKind::Binary, pos);
    e->op = op;
    e->a = std::move(left);
    e->b = std::move(right);
    return e;
  }

  ExprPtr parse_or() {
    auto left = parse_and();
    while (is_identifier("or")) {
      const uint32_t pos = peek().pos;
      ++current_;
      left = binary(Op::Or, pos, std::move(left), parse_and());
    }
    return left;
  }

  ExprPtr parse_and() {
    auto left = parse_not();
    while (is_identifier("and")) {
      const uint32_t pos = peek().pos;
      ++current_;
      left = binary(Op::And, pos, std::move(left), parse_not());
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_identifier("not")) {
      DepthGuard guard(*this);
      auto e = node(ExprKind::Unary, peek().pos);
      ++current_;
      e->op = Op::Not;
      e->a = parse_not();
      return e;
    }
    return parse_comparison();
  }

  ExprPtr parse_comparison() {
    auto left = parse_additive();
    for (;;) {
      const Token& t = peek();
      Op op;
      if (is_identifier("not") && is_identifier("in", 1)) {
        op = Op::NotIn;
        current_ += 2;
      } else if (is_identifier("in")) {
        op = Op::In;
        ++current_;
      } else if (t.type == TokenType::Comparison) {
        op = t.value == "=="   ? Op::Eq
             : t.value == "!=" ? Op::Ne
             : t.value == "<"  ? Op::Lt
             : t.value == ">"  ? Op::Gt
             : t.value == "<=" ? Op::Le
                               : Op::Ge;
        ++current_;
      } else {
        return left;
      }
      left = binary(op, t.pos, std::move(left), parse_additive());
    }
  }

  ExprPtr parse_additive() {
    auto left = parse_multiplicative();
    while (is(TokenType::Additive)) {
      const Token& t = peek();
      ++current_;
      const Op op = t.value == "+" ? Op::Add : t.value == "-" ? Op::Sub : Op::Concat;
      left = binary(op, t.pos, std::move(left), parse_multiplicative());
    }
    return left;
  }

  ExprPtr parse_multiplicative() {
    auto left = parse_power();
    while (is(TokenType::Multiplicative)) {
      const Token& t = peek();
      ++current_;
      const Op op = t.value == "*"    ? Op::Mul
                    : t.value == "/"  ? Op::Div
                    : t.value == "//" ? Op::FloorDiv
                                      : Op::Mod;
      left = binary(op, t.pos, std::move(left), parse_power());
    }
    return left;
  }

  ExprPtr parse_power() {
    auto left = parse_test();
    while (is(TokenType::Power)) {
      const Token& t = peek();
      ++current_;
      left = binary(Op::Pow, t.pos, std::move(left), parse_test());
    }
    return left;
  }

  // Tests that take one argument may give it without parentheses: `x is divisibleby 3`.
  static bool test_takes_argument(const std::string& name) {
    static const std::set<std::string> kNames{"divisibleby", "eq", "equalto",  "ne",
                                              "sameas",      "in", "lt",       "le",
                                              "gt",          "ge", "lessthan", "greaterthan"};
    return kNames.count(name) > 0;
  }
  bool starts_operand() const {
    switch (peek().type) {
      case TokenType::Number:
      case TokenType::String:
      case TokenType::OpenBracket:
      case TokenType::OpenBrace:
        return true;
      case TokenType::Identifier: {
        static const std::set<std::string> kKeywords{"and", "or", "not", "in", "is", "if", "else"};
        return kKeywords.count(peek().value) == 0;
      }
      default:
        return false;
    }
  }

  ExprPtr parse_test() {
    auto operand = parse_filter();
    while (is_identifier("is")) {
      const uint32_t pos = peek().pos;
      ++current_;
      auto e = node(ExprKind::Test, pos);
      e->flag = is_identifier("not");
      if (e->flag) ++current_;
      const Token& name = peek();
      // `none`, `true` and `false` are names here even though they are also values.
      if (name.type != TokenType::Identifier) fail("expected the name of a test after 'is'", name);
      ++current_;
      e->name = name.value;
      if (is(TokenType::OpenParen)) {
        e->list = parse_args(false);
      } else if (test_takes_argument(e->name) && starts_operand()) {
        e->list.push_back(parse_primary_with_members());
      }
      e->a = std::move(operand);
      operand = std::move(e);
    }
    return operand;
  }

  ExprPtr parse_filter_spec(ExprPtr operand) {
    const Token& name = peek();
    if (name.type != TokenType::Identifier) fail("expected a filter name", name);
    ++current_;
    auto e = node(ExprKind::Filter, name.pos);
    e->name = name.value;
    if (is(TokenType::OpenParen)) {
      e->flag = true;
      e->list = parse_args(false);
    }
    e->a = std::move(operand);
    return e;
  }

  ExprPtr parse_filter() {
    auto operand = parse_unary_sign();
    while (is(TokenType::Pipe)) {
      ++current_;
      operand = parse_filter_spec(std::move(operand));
    }
    return operand;
  }

  ExprPtr parse_unary_sign() {
    const Token& t = peek();
    if ((t.type == TokenType::Unary || t.type == TokenType::Additive) &&
        (t.value == "-" || t.value == "+")) {
      DepthGuard guard(*this);
      ++current_;
      auto e = node(ExprKind::Unary, t.pos);
      e->op = t.value == "-" ? Op::Neg : Op::Pos;
      e->a = parse_unary_sign();
      return e;
    }
    return parse_call_member();
  }

  ExprPtr parse_primary_with_members() { return parse_member(parse_primary()); }

  ExprPtr parse_call_member() {
    auto member = parse_member(parse_primary());
    if (is(TokenType::OpenParen)) return parse_call(std::move(member));
    return member;
  }

  ExprPtr parse_call(ExprPtr callee) {
    DepthGuard guard(*this);
    auto e = node(ExprKind::Call, callee->pos);
    e->list = parse_args(false);
    e->a = std::move(callee);
    ExprPtr result = parse_member(std::move(e));
    if (is(TokenType::OpenParen)) return parse_call(std::move(result));
    return result;
  }

  // `parameters`: a macro's declaration (names with optional defaults); else a call's arguments.
  std::vector<ExprPtr> parse_args(bool parameters) {
    expect(TokenType::OpenParen, "(");
    std::vector<ExprPtr> args;
    std::set<std::string> names;
    bool saw_keyword = false, saw_spread = false;
    while (!is(TokenType::CloseParen)) {
      const Token& t = peek();
      if (t.type == TokenType::End) fail("missing ')' to close the argument list", t);
      const bool keyword_spread = t.type == TokenType::Power;
      const bool spread = t.type == TokenType::Multiplicative && t.value == "*";
      if (parameters && (keyword_spread || spread))
        fail("argument unpacking is not allowed in parameter declarations", t);
      if (keyword_spread) {
        ++current_;
        auto e = node(ExprKind::KeywordSpread, t.pos);
        e->a = parse_expression();
        args.push_back(std::move(e));
        if (is(TokenType::Comma)) ++current_;
        if (!is(TokenType::CloseParen)) fail("'**' must be applied to the last argument", peek());
        break;
      }
      ExprPtr arg;
      if (spread) {
        if (saw_spread) fail("only one '*' argument is allowed", t);
        saw_spread = true;
        ++current_;
        arg = node(ExprKind::Spread, t.pos);
        arg->a = parse_expression();
      } else {
        arg = parse_expression();
        if (is(TokenType::Equals)) {
          ++current_;
          if (arg->kind != ExprKind::Name)
            fail_at(parameters ? "expected a parameter name" : "expected a keyword name", *arg);
          auto kw = node(ExprKind::Keyword, arg->pos);
          kw->name = arg->name;
          kw->a = parse_expression();
          arg = std::move(kw);
        }
        if (parameters) {
          if (arg->kind != ExprKind::Name && arg->kind != ExprKind::Keyword)
            fail_at("expected a parameter name", *arg);
          if (!names.insert(arg->name).second)
            fail_at("duplicate parameter name '" + arg->name + "'", *arg);
        }
        if (arg->kind == ExprKind::Keyword) {
          saw_keyword = true;
        } else if (saw_keyword) {
          fail_at(parameters ? "a parameter without a default follows one with a default"
                             : "positional arguments must come before keyword arguments",
                  *arg);
        } else if (saw_spread) {
          fail_at("positional arguments must not follow '*' unpacking", *arg);
        }
      }
      args.push_back(std::move(arg));
      if (is(TokenType::Comma)) ++current_;
    }
    expect(TokenType::CloseParen, ")");
    return args;
  }

  ExprPtr parse_subscript(ExprPtr object, uint32_t pos) {
    std::vector<ExprPtr> parts;
    bool is_slice = false;
    while (!is(TokenType::CloseBracket)) {
      if (at_end()) fail("missing ']'", peek());
      if (is(TokenType::Colon)) {
        parts.push_back(nullptr);
        ++current_;
        is_slice = true;
      } else {
        parts.push_back(parse_expression());
        if (is(TokenType::Colon)) {
          ++current_;
          is_slice = true;
        }
      }
    }
    if (parts.empty()) fail("expected an index or a slice inside [ ]", peek());
    expect(TokenType::CloseBracket, "]");
    if (is_slice) {
      if (parts.size() > 3) fail("a slice has at most three parts", peek());
      auto e = node(ExprKind::Slice, pos);
      e->a = std::move(object);
      parts.resize(3);
      e->list = std::move(parts);
      return e;
    }
    if (parts.size() != 1) fail("expected one index inside [ ]", peek());
    auto e = node(ExprKind::Index, pos);
    e->a = std::move(object);
    e->b = std::move(parts[0]);
    return e;
  }

  ExprPtr parse_member(ExprPtr object) {
    while (is(TokenType::Dot) || is(TokenType::OpenBracket)) {
      const Token& t = peek();
      ++current_;
      if (t.type == TokenType::OpenBracket) {
        object = parse_subscript(std::move(object), t.pos);
        continue;
      }
      const Token& prop = peek();
      if (prop.type == TokenType::Identifier) {
        ++current_;
        auto e = node(ExprKind::Attribute, t.pos);
        e->name = prop.value;
        e->a = std::move(object);
        object = std::move(e);
      } else if (prop.type == TokenType::Number && prop.value.find('.') == std::string::npos &&
                 prop.value[0] != '-' && prop.value[0] != '+') {
        auto e = node(ExprKind::Index, t.pos);
        e->b = parse_primary();  // x.0 is x[0]
        e->a = std::move(object);
        object = std::move(e);
      } else {
        fail("expected a name or an integer after '.'", prop);
      }
    }
    return object;
  }

  ExprPtr parse_primary() {
    const Token& t = peek();
    switch (t.type) {
      case TokenType::Number: {
        ++current_;
        auto e = node(ExprKind::Literal, t.pos);
        if (t.value.find('.') != std::string::npos) {
          e->literal = Value::number(std::strtod(t.value.c_str(), nullptr));
        } else {
          int64_t v = 0;
          const char* begin = t.value.data() + (t.value[0] == '+' ? 1 : 0);
          auto res = std::from_chars(begin, t.value.data() + t.value.size(), v);
          if (res.ec != std::errc()) fail("integer literal " + t.value + " is too large", t);
          e->literal = Value::integer(v);
        }
        return e;
      }
      case TokenType::String: {
        std::string value;
        while (is(TokenType::String)) value += tokens_[current_++].value;  // 'a' 'b' is 'ab'
        auto e = node(ExprKind::Literal, t.pos);
        e->literal = Value::string(std::move(value));
        return e;
      }
      case TokenType::Identifier: {
        ++current_;
        auto e = node(ExprKind::Name, t.pos);
        e->name = t.value;
        return e;
      }
      case TokenType::OpenParen: {
        DepthGuard guard(*this);
        ++current_;
        auto e = parse_expression_sequence(false);
        expect(TokenType::CloseParen, ")");
        return e;
      }
      case TokenType::OpenBracket: {
        DepthGuard guard(*this);
        ++current_;
        auto e = node(ExprKind::List, t.pos);
        while (!is(TokenType::CloseBracket)) {
          if (at_end()) fail("missing ']' to close the list", t);
          e->list.push_back(parse_expression());
          if (is(TokenType::Comma)) ++current_;
        }
        ++current_;
        return e;
      }
      case TokenType::OpenBrace: {
        DepthGuard guard(*this);
        ++current_;
        auto e = node(ExprKind::Dict, t.pos);
        while (!is(TokenType::CloseBrace)) {
          if (at_end()) fail("missing '}' to close the dict", t);
          e->list.push_back(parse_expression());
          expect(TokenType::Colon, "':' between a key and its value");
          e->list.push_back(parse_expression());
          if (is(TokenType::Comma)) ++current_;
        }
        ++current_;
        return e;
      }
      default:
        fail("unexpected " + describe(t), t);
    }
  }

  std::vector<Token> tokens_;
  Token end_;
  std::size_t current_ = 0;
  int depth_ = 0;
};

}  // namespace

Program parse_template(std::string_view source) {
  return Parser(tokenize(source), static_cast<uint32_t>(source.size())).run();
}

}  // namespace lora::data::jinja
