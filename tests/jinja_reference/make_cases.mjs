// Regenerates cases.jsonl: each case is rendered by @huggingface/jinja, the renderer the chat
// goldens come from, and the result (or the fact that it refused) is recorded.
//   npm install @huggingface/jinja@0.5.11 && node make_cases.mjs > cases.jsonl
import { Template } from "@huggingface/jinja";

const messages = [
  { role: "system", content: "Be brief." },
  { role: "user", content: "Hi 😀 é\nsecond line" },
  { role: "assistant", content: "  Hello!  ", extra: { b: 1, a: [1, 2.5, null, true] } },
  { role: "user", content: "<tool_response>x</tool_response>" },
];
const tools = [
  { type: "function", function: { name: "get_weather", description: "Weather \"now\"",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } },
];
const base = { messages, tools, add_generation_prompt: true, bos_token: "<s>", eos_token: "</s>",
  n_int: 2, n_float: 2.5, n_whole: 2.0, empty: "", flag: false };

const R = String.raw;
const cases = {
  // Whitespace control: trim_blocks, lstrip_blocks, '-' markers, the trailing newline.
  ws_blocks: "a\n{% if true %}\nb\n{% endif %}\nc\n",
  ws_lstrip: "  {% if true %}x{% endif %}  y\n\t{% if true %}z{% endif %}",
  ws_lstrip_not_after_text: "a {% if true %}x{% endif %}",
  ws_dash: "a  {%- if true -%}  b  {%- endif -%}  c",
  ws_expr_dash: "{{- ' a ' -}}  \n  {{ 'b' }}  {{- 'c' }}\n",
  ws_comments: "a {# c #} b {#- c -#} d\n{# x #}\ne",
  ws_crlf: "x\r\n  {% if true %}y{% endif %}\r\nz",
  ws_expr_newline: "{{ 'a' }}\n{{ 'b' }}\n\n",
  ws_two_trailing_newlines: "x\n\n",
  ws_generation: "A{% generation %}B{% endgeneration %}C {%- generation -%} D",
  ws_keep_expr_newline: "{% set x = 1 %}\n{{ x }}\n{% for i in [1,2] %}\n  {{ i }}\n{% endfor %}\n",
  // Printing values.
  print_numbers: "{{ 1 }} {{ 1.0 }} {{ 1.5 }} {{ -0.0 }} {{ 10/4 }} {{ 10//4 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2**10 }} {{ 2**-1 }} {{ 3.0 * 2 }} {{ 2 * 3 }} {{ 7 / 7 }}",
  print_floats: "{{ 1 / 3 }} {{ 2 / 3 }} {{ 1 / 8 }} {{ 10000000000.0 * 10000000000.0 * 10.0 }} {{ 1 / 10000000 }} {{ 123456789.125 }} {{ 0.1 + 0.2 }} {{ 100.0 }}",
  print_values: "{{ true }} {{ false }}|{{ none }}|{{ nothing_here }}|{{ [1, 'a', none, true, 1.0] }} {{ {'a': 1, 'b': [1, 2]} }} {{ messages[2].extra }}",
  print_context_numbers: "{{ n_int }} {{ n_float }} {{ n_whole }} {{ n_whole is integer }} {{ n_float is integer }}",
  concat: "{{ 'a' ~ 1 ~ 1.0 ~ true ~ [1, 2] }} {{ 'a' + 1.5 }} {{ 1 + 'a' }} {{ 'x' + 2.0 }} {{ [1] + [2, 3] }}",
  // Operators.
  equality: "{{ 1 == 1.0 }} {{ '1' == 1 }} {{ none == nothing_here }} {{ [1] == [1] }} {{ messages == messages }} {{ messages[0] == messages[0] }} {{ 'a' != 'b' }} {{ true == 1 }} {{ 'a' == 'a' }}",
  membership: "{{ 'a' in 'cat' }} {{ 1 in [1, 2] }} {{ 1.0 in [1] }} {{ 'k' in {'k': 1} }} {{ 'x' not in [] }} {{ 'x' in nothing_here }} {{ 'role' in messages[0] }} {{ 'x' not in 'y' }}",
  truthiness: "{% if [] %}T{% else %}F{% endif %}{% if {} %}T{% else %}F{% endif %}{% if '' %}T{% else %}F{% endif %}{% if 0.0 %}T{% else %}F{% endif %}{% if namespace() %}T{% else %}F{% endif %}{% if ' ' %}T{% else %}F{% endif %}{% if none %}T{% else %}F{% endif %}",
  and_or_values: "{{ 0 or 'x' }} {{ 'a' and 'b' }} {{ [] or [1] }} {{ none or 'n' }} {{ 1 and 0 }} {{ empty or 'e' }}",
  not_precedence: "{{ not 1 == 2 }} {{ not true and false }} {{ not (true and false) }} {{ not 'x' in 'xy' }}",
  ternary: "{{ 'y' if 1 > 2 else 'n' }} {{ 'a' if false }}|{{ 'a' if true }} {{ 1 if false else 2 if true else 3 }}",
  precedence_filters: "{{ -3|abs }} {{ 'a ' ~ ' b '|trim ~ 'c' }} {{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 2 ** 3 ** 2 }} {{ 10 - 2 - 3 }}",
  arithmetic: "{{ 7 // 2 }} {{ 7.0 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} {{ 2 ** 0.5 }} {{ 5.5 % 2 }} {{ 1 - 1.5 }}",
  comparisons: "{{ 1 < 2 }} {{ 2 <= 2.0 }} {{ 3 > 4 }} {{ 3 >= 3 }} {{ 1.5 < 2 }}",
  unary: "{{ -(3) }} {{ +3 }} {{ - -3 }} {{ not not 1 }} {{ -n_float }} {{ -true }}",
  // Indexing and slicing.
  slicing: "{{ [1,2,3,4,5][1:3] }} {{ [1,2,3,4,5][::-1] }} {{ [1,2,3,4,5][-2:] }} {{ 'hello'[1:4] }} {{ 'hello'[::-1] }} {{ [1,2,3,4,5][::2] }} {{ [1,2,3,4,5][4:-1:-1] }} {{ [1,2,3][5:] }} {{ [1,2,3,4][:-1] }} {{ messages[1:]|length }} {{ [1,2,3,4,5][3:0:-1] }} {{ 'héllo😀'[-3:] }}",
  indexing: "{{ [1,2,3][-1] }} {{ 'abc'[0] }} {{ 'abc'[-1] }} {{ messages[0].role }} {{ messages.0.role }} {{ messages[-1]['content'] }}|{{ [1][5] }}|{{ messages[0]['nope'] }}|",
  undefined_chains: "{{ messages[0].nope.deeper }}|{{ none.x }}|{{ (1).x }}|{% if messages[0].tool_calls is defined %}y{% else %}n{% endif %}",
  literals: R`{{ 'a' 'b' }} {{ "dq'" }} {{ 'it\'s' }} {{ 'tab\there' }} {{ 'nl\nx' }} {{ '\x41\u00e9\\' }} {{ {'a': {'b': 1}} }} {{ [1, 2,] }} {{ (1, 2)[1] }}`,
  // Loops.
  loop_vars: "{% for m in messages %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }}/{{ loop.previtem.role if loop.previtem is defined else '-' }}/{{ loop.nextitem.role if loop.nextitem is defined else '-' }};{% endfor %}",
  loop_if: "{% for x in [1,2,3,4] if x is even %}{{ x }}:{{ loop.index }}:{{ loop.last }} {% endfor %}",
  loop_else: "{% for x in [] %}{{ x }}{% else %}empty{% endfor %} {% for x in [1] %}{{ x }}{% else %}no{% endfor %}",
  loop_dict: "{% for k in {'b': 1, 'a': 2} %}{{ k }}{% endfor %} {% for k, v in {'b': 1, 'a': 2}.items() %}{{ k }}={{ v }};{% endfor %} {% for k, v in {'b': 1}|items %}{{ k }}{{ v }}{% endfor %}",
  loop_scoping: "{% set x = 1 %}{% for i in [1,2] %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}",
  loop_nested: "{% for a in [1,2] %}{% for b in [3,4] %}{{ loop.index }}{{ b }}{% endfor %}{{ loop.index }}|{% endfor %}",
  loop_break_continue: "{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}",
  loop_break_discards: "{% for i in range(3) %}a{{ i }}{% if i == 1 %}{% break %}{% endif %}b{% endfor %}",
  loop_reverse_messages: "{% for m in messages[::-1] %}{{ m.role[0] }}{% endfor %}",
  namespace: "{% set ns = namespace(c=0, s='') %}{% for i in range(3) %}{% set ns.c = ns.c + i %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.c }} {{ ns.s }} {{ ns }} {{ namespace({'a': 1}, b=2).b }}",
  set_in_if: "{% if true %}{% set y = 5 %}{% endif %}{{ y }}",
  set_block: "{% set content %}  hi {{ 1 }}  {% endset %}[{{ content }}]",
  set_tuple: "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set c, d = [3, 4] %}{{ c }}{{ d }}",
  // Macros and call blocks.
  macro_defaults: "{% macro greet(name, greeting='Hi') %}{{ greeting }} {{ name }}!{% endmacro %}{{ greet('Bob') }} {{ greet('Al', greeting='Yo') }} {{ greet(name='Z') }} {{ greet() }}",
  macro_varargs: "{% macro f(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ f(1, 2, 3, x=4) }}",
  macro_default_uses_param: "{% macro f(a, b=a ~ '!') %}{{ b }}{% endmacro %}{{ f('x') }}",
  macro_dynamic_scope: "{% macro m() %}{{ outer }}{% endmacro %}{% set outer = 'o' %}{{ m() }}",
  macro_recursive: "{% macro count(n) %}{{ n }}{% if n > 0 %}{{ count(n - 1) }}{% endif %}{% endmacro %}{{ count(5) }}",
  call_block: "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold{% endcall %}",
  call_block_args: "{% macro each(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}{% call(x) each([1,2]) %}[{{ x }}]{% endcall %}",
  filter_block: "{% filter upper %}hello {{ 'x' }}{% endfilter %}",
  // Filters.
  filters_text: "{{ '  hi There  '|trim }}|{{ 'abc'|upper }}|{{ 'ABC'|lower }}|{{ 'hello world-foo_bar élan'|title }}|{{ 'hELLO'|capitalize }}|{{ messages[1].content|upper }}|{{ 'ÀÉ'|lower }}",
  filters_tojson: "{{ messages|tojson }}\n{{ messages[:3]|tojson(indent=2) }}\n{{ {'a': [1, 2.5, none, true, 'x\"y\n\t\u0001'], 'b': {}} |tojson }}\n{{ {'z': 1, 'a': 2}|tojson(sort_keys=true) }}\n{{ 'é😀'|tojson(ensure_ascii=true) }}\n{{ [[], {}]|tojson(indent=4) }}\n{{ {'a':1, 'b': [2]}|tojson(separators=[',', ':']) }}\n{{ tools|tojson }}\n{{ nothing_here|tojson }}\n{{ 1.0|tojson }} {{ '</s>'|tojson }}",
  filters_length: "{{ messages|length }} {{ 'hello'|length }} {{ {'a':1}|length }} {{ 'abc'.length }} {{ messages.length }}",
  filters_default: "{{ nothing_here|default('d') }} {{ none|default('d') }} {{ ''|default('d', true) }} {{ 'x'|default('d') }} {{ flag|default('d', boolean=true) }}",
  filters_first_last_join: "{{ [1,2,3]|first }} {{ [1,2,3]|last }} {{ [1,2,3]|join(', ') }} {{ ['a','b']|join }} {{ 'abc'|join('-') }} {{ [1, none, true, 2.5, 'x']|join('|') }}",
  filters_replace: "{{ 'aaa'|replace('a', 'b') }} {{ 'aaa'|replace('a', 'b', 2) }} {{ 'abc'.replace('', '-') }} {{ 'a.b.c'.replace('.', '/', 1) }} {{ 'xyx'.replace('x', '') }}",
  filters_convert: "{{ [1,2]|list }} {{ 12|string }} {{ 1.0|string }} {{ [1, 'a']|string }} {{ '42abc'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ 3.7|int }} {{ '3.5e1x'|float }} {{ 2|float }} {{ -5|abs }} {{ -2.5|abs }} {{ ' 12 '|int }} {{ '-3'|int }} {{ true|int }}",
  filters_lists: "{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')|list }} {{ messages|rejectattr('role', 'equalto', 'user')|length }} {{ [3,1,2]|sort }} {{ ['b','A','c']|sort }} {{ ['b','A','c']|sort(reverse=true) }} {{ ['b','A','c']|sort(case_sensitive=true) }} {{ [1,2,1,3]|unique }} {{ [1,2,3]|reverse }} {{ messages|map(attribute='role')|join(',') }} {{ [{'n': 2}, {'n': 1}]|sort(attribute='n') }} {{ messages|selectattr('extra')|length }} {{ messages|map(attribute='missing', default='m')|list }}",
  filters_dict: "{{ {'a':1,'b':2}.keys() }} {{ {'a':1,'b':2}.values() }} {{ {'a':1}.items() }} {{ {'a':1}.get('a') }} {{ {'a':1}.get('z', 'dflt') }} {{ {'a':1}.get('z') }} {{ {'b':1,'a':2}|dictsort }} {{ {'b':1,'a':2}.items()|list }}",
  filters_indent: "{{ 'a\nb\n\nc'|indent }}|{{ 'a\nb'|indent(2, true) }}|{{ 'a\n\nb'|indent(2, blank=true) }}|{{ 'x\ny'|indent(width=1, first=true) }}",
  // Tests.
  tests: "{{ 1 is number }}{{ 1.5 is integer }}{{ 'a' is string }}{{ none is none }}{{ x is defined }}{{ x is undefined }}{{ [] is iterable }}{{ {} is mapping }}{{ 'a' is sequence }}{{ true is boolean }}{{ false is false }}{{ true is true }}{{ 3 is odd }}{{ 4 is even }}{{ 'abc' is lower }}{{ 'ABC' is upper }}{{ messages is not none }}{{ {} is iterable }}{{ 1 is boolean }}{{ range is callable }}{{ none is defined }}{{ 'a' is not string }}",
  // String methods.
  string_methods: "{{ 'Hello'.upper() }} {{ 'Hello'.lower() }} {{ '  x  '.strip() }}|{{ '  x  '.lstrip() }}|{{ '  x  '.rstrip() }}|{{ 'hello world'.title() }} {{ 'ab'.startswith('a') }} {{ 'ab'.endswith(('x','b')) }} {{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a,b,c'.split(',', 1) }} {{ 'a b c'.split(none, 1) }} {{ 'hELLO'.capitalize() }}",
  strip_arguments_ignored: "[{{ '\n x \n'.strip('\n') }}]|[{{ 'xxhixx'.strip('x') }}]|[{{ '\n\n a'.lstrip('\n') }}]|[{{ 'a \n'.rstrip('\n') }}]",
  think_split: "{% set c = messages[2].content ~ '<think>\n r \n</think>\n\n answer' %}{{ c.split('</think>')[-1].lstrip('\n') }}|{{ c.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') }}",
  range_fn: "{{ range(3) }} {{ range(1, 4) }} {{ range(5, 0, -2) }} {{ range(0) }}",
  // A small tool-calling template in the style real ones use.
  tool_template: `{%- if tools %}{{- '<tools>' }}{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}{{- '\\n</tools>' }}{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'assistant' and message.extra is defined %}
        {{- '\\n' + message.role + ': ' + message.content | trim }}
        {%- for k, v in message.extra.items() %}{{ ' ' ~ k ~ '=' ~ v|tojson }}{%- endfor %}
    {%- else %}
        {{- '\\n' + message.role + ': ' + message.content }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{ '\\nassistant:' }}{% endif %}`,
  // Errors: the reference refuses these; so must we.
  error_raise: "{{ raise_exception('boom') }}",
  error_if_no_test: "{% if %}x{% endif %}",
  error_for_no_iterable: "{% for x in %}{% endfor %}",
  error_dangling_plus: "{{ 1 + }}",
  error_stray_endif: "{% endif %}",
  error_unclosed_if: "{% if true %}x",
  error_unclosed_string: "{{ 'abc }}",
  error_unclosed_comment: "a {# abc",
  error_unknown_statement: "{% foo %}",
  error_filter_without_name: "{{ x | }}",
  error_none_plus: "{{ none + 1 }}",
  error_undefined_plus: "{{ nothing_here + 1 }}",
  error_unknown_filter: "{{ [1, 2] | no_such_filter }}",
  error_call_undefined: "{{ nothing_here() }}",
  error_set_attr_on_non_namespace: "{% set ns = 1 %}{% set ns.a = 2 %}",
  error_unclosed_expression: "{{ 1 ",
  error_unclosed_list: "{{ [1, 2 }}",
  error_bad_character: "{{ 1 $ 2 }}",
  error_odd_on_string: "{{ 'a' is odd }}",
  error_macro_extra_args: "{% macro f(a) %}{{ a }}{% endmacro %}{{ f(1, 2) }}",
  error_macro_unknown_keyword: "{% macro f(a) %}{{ a }}{% endmacro %}{{ f(b=2) }}",
  error_unpack_count: "{% set a, b = [1, 2, 3] %}",
  error_loop_over_number: "{% for x in 5 %}{% endfor %}",
  error_dict_key_not_string: "{{ {1: 2} }}",
  error_missing_endfor: "{% for x in [1] %}{{ x }}{% endif %}",
};

for (const [name, template] of Object.entries(cases)) {
  const context = base;
  let record;
  try {
    record = { name, template, rendered: new Template(template).render(context) };
  } catch (e) {
    record = { name, template, error: String(e.message ?? e) };
  }
  console.log(JSON.stringify(record));
}
// The shared context, once, for the test to rebuild the same variables.
console.log(JSON.stringify({ name: "__context__", context: base }));
