"""The tool-call rescue corpus: answers whose tool calls llama-server's parser did not recognise, each in the shape its
model family documents (the source template or llama.cpp parser test is named per family), with the calls and the
text that must come out; and look-alikes that must stay text exactly as written.

The shapes are taken from llama.cpp's ``common/chat-parser.cpp`` parsers, ``tests/test-chat.cpp`` fixtures
(``special_function`` / ``arg1`` are its test tool) and ``models/templates/*.jinja``, and from the malformed variants
agents report (a fence around the call, a missing closing tag, trailing commas, single quotes, strings for numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _tool(name: str, props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": name.replace("_", " "),
                                             "parameters": {"type": "object", "properties": props}}}


TOOLS: list[dict[str, Any]] = [
    _tool("get_weather", {"city": {"type": "string"}, "days": {"type": "integer"}, "units": {"type": "string"}}),
    _tool("special_function", {"arg1": {"type": "integer"}}),
    _tool("special_function_with_opt", {"arg1": {"type": "integer"}, "arg2": {"type": "integer"}}),
    _tool("run_in_terminal", {"command": {"type": "string"}}),
    _tool("write_file", {"path": {"type": "string"}, "content": {"type": "string"}}),
    _tool("search", {"query": {"type": "string"}, "limit": {"type": "integer"}, "exact": {"type": "boolean"},
                     "score": {"type": "number"}, "tags": {"type": "array", "items": {"type": "string"}}}),
    _tool("python", {"code": {"type": "string"}}),
]

PARIS = ("get_weather", {"city": "Paris"})
SF1 = ("special_function", {"arg1": 1})
SF_OPT = ("special_function_with_opt", {"arg1": 1, "arg2": 2})
PWD = ("run_in_terminal", {"command": "pwd"})


@dataclass(frozen=True)
class Case:
    name: str
    family: str
    text: str
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    content: str | None = ""  # the text left over; None: the answer unchanged (a look-alike)

    @property
    def expected_text(self) -> str:
        return self.text if self.content is None else self.content


def lookalike(name: str, family: str, text: str) -> Case:
    return Case(name, family, text, [], None)


HERMES_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
QWEN_CODER_CALL = ("<tool_call>\n<function=special_function>\n<parameter=arg1>\n1\n</parameter>\n</function>\n"
                   "</tool_call>")

CASES: list[Case] = [
    # -- Hermes 2 Pro / Qwen 2.5-3 (common_chat_parse_hermes_2_pro; NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja,
    #    Qwen-Qwen2.5-7B-Instruct.jinja)
    Case("hermes-plain", "hermes", HERMES_CALL, [PARIS]),
    Case("hermes-text-before", "hermes", "Let me check the weather.\n" + HERMES_CALL, [PARIS],
         "Let me check the weather.\n"),
    Case("hermes-two-blocks", "hermes", HERMES_CALL + "\n" + HERMES_CALL.replace("Paris", "Lyon"),
         [PARIS, ("get_weather", {"city": "Lyon"})]),
    Case("hermes-no-closer", "hermes", '<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}', [SF1]),
    Case("hermes-compact", "hermes", '<tool_call>{"name":"special_function","arguments":{"arg1":1}}</tool_call>',
         [SF1]),
    Case("hermes-array-in-block", "hermes",
         '<tool_call>[{"name": "special_function", "arguments": {"arg1": 1}}, '
         '{"name": "special_function_with_opt", "arguments": {"arg1": 1, "arg2": 2}}]</tool_call>', [SF1, SF_OPT]),
    Case("hermes-function-call-tag", "hermes",
         '<function_call>{"name": "run_in_terminal", "arguments": {"command": "pwd"}}</function_call>', [PWD]),
    Case("hermes-after-think", "hermes", "<think>\nThe user wants weather.\n</think>\n\n" + HERMES_CALL, [PARIS],
         "<think>\nThe user wants weather.\n</think>\n\n"),
    Case("hermes-then-text", "hermes", HERMES_CALL + "\nI asked for the weather.", [PARIS],
         "\nI asked for the weather."),
    Case("hermes-openai-shape", "hermes",
         '<tool_call>{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}'
         "</tool_call>", [PARIS]),
    Case("hermes-string-arguments", "hermes",
         '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}</tool_call>', [PARIS]),
    # -- Qwen3-Coder / Qwen3.5 XML (common_chat_parse_qwen3_coder_xml; Qwen3-Coder.jinja; tests/test-chat.cpp)
    Case("qwen-coder-one", "qwen_xml", QWEN_CODER_CALL, [SF1]),
    Case("qwen-coder-no-open-tag", "qwen_xml",
         "<function=special_function>\n<parameter=arg1>\n1\n</parameter>\n</function>\n</tool_call>", [SF1]),
    Case("qwen-coder-content-first", "qwen_xml", "Let me call it.\n" + QWEN_CODER_CALL, [SF1], "Let me call it.\n"),
    Case("qwen-coder-parallel", "qwen_xml", QWEN_CODER_CALL + "\n" + QWEN_CODER_CALL.replace("=arg1>\n1", "=arg1>\n2"),
         [SF1, ("special_function", {"arg1": 2})]),
    Case("qwen-coder-two-params", "qwen_xml",
         "<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n<parameter=days>\n3\n"
         "</parameter>\n</function>\n</tool_call>", [("get_weather", {"city": "New York", "days": 3})]),
    Case("qwen-coder-multiline-value", "qwen_xml",
         "<tool_call>\n<function=write_file>\n<parameter=path>\na.py\n</parameter>\n<parameter=content>\n"
         "def f():\n    return 1\n</parameter>\n</function>\n</tool_call>",
         [("write_file", {"path": "a.py", "content": "def f():\n    return 1"})]),
    Case("qwen-coder-missing-param-close", "qwen_xml",
         "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n<parameter=days>\n2\n</function>\n</tool_call>",
         [("get_weather", {"city": "Paris", "days": 2})]),
    Case("qwen-coder-in-fence", "qwen_xml", "```xml\n" + QWEN_CODER_CALL + "\n```", [SF1]),
    # -- Functionary v3.1 (common_chat_parse_functionary_v3_1_llama_3_1; meetkai-functionary-medium-v3.1.jinja)
    Case("functionary-json-body", "qwen_xml", '<function=special_function>{"arg1": 1}</function>', [SF1]),
    Case("functionary-two", "qwen_xml",
         '<function=special_function>{"arg1": 1}</function>\n<function=get_weather>{"city": "Paris"}</function>',
         [SF1, PARIS]),
    # -- GLM 4.5-4.7 (common_chat_parse_glm_4_5; zai-org-GLM-4.5.jinja; tests/test-chat.cpp)
    Case("glm-one", "glm",
         "\n<tool_call>special_function\n<arg_key>arg1</arg_key>\n<arg_value>1</arg_value>\n</tool_call>", [SF1]),
    Case("glm-47-compact", "glm",
         "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value><arg_key>days</arg_key>"
         "<arg_value>3</arg_value></tool_call>", [("get_weather", {"city": "Paris", "days": 3})]),
    Case("glm-after-think", "glm",
         "<think>I need the weather.</think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris"
         "</arg_value>\n</tool_call>", [PARIS], "<think>I need the weather.</think>\n"),
    Case("glm-two", "glm",
         "<tool_call>special_function\n<arg_key>arg1</arg_key>\n<arg_value>1</arg_value>\n</tool_call>\n"
         "<tool_call>run_in_terminal\n<arg_key>command</arg_key>\n<arg_value>pwd</arg_value>\n</tool_call>",
         [SF1, PWD]),
    Case("glm-array-value", "glm",
         "<tool_call>search\n<arg_key>query</arg_key>\n<arg_value>llama</arg_value>\n<arg_key>tags</arg_key>\n"
         '<arg_value>["a", "b"]</arg_value>\n</tool_call>', [("search", {"query": "llama", "tags": ["a", "b"]})]),
    # -- Mistral (common_chat_parse_mistral_nemo / _magistral; mistralai-Mistral-Nemo-Instruct-2407.jinja;
    #    tests/test-chat.cpp "[TOOL_CALLS]special_function[ARGS]{...}")
    Case("mistral-nemo-array", "mistral",
         '[TOOL_CALLS][{"name": "special_function", "arguments": {"arg1": 1}, "id": "123456789"}]', [SF1]),
    Case("mistral-nemo-two", "mistral",
         '[TOOL_CALLS][{"name": "special_function", "arguments": {"arg1": 1}, "id": "123456789"}, '
         '{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "987654321"}]', [SF1, PARIS]),
    Case("mistral-args", "mistral", '[TOOL_CALLS]special_function[ARGS]{"arg1":1}', [SF1]),
    Case("mistral-args-parallel", "mistral",
         '[TOOL_CALLS]special_function[ARGS]{"arg1": 1}'
         '[TOOL_CALLS]special_function_with_opt[ARGS]{"arg1": 1, "arg2": 2}',
         [SF1, SF_OPT]),
    Case("mistral-call-id", "mistral", '[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris"}', [PARIS]),
    Case("mistral-after-think", "mistral",
         "[THINK]I'm\nthinking[/THINK]" + '[TOOL_CALLS]special_function[ARGS]{"arg1":1}',
         [SF1], "[THINK]I'm\nthinking[/THINK]"),
    # -- Llama 3.x / 4 (common_chat_parse_llama_3_1; meta-llama-Llama-3.1-8B-Instruct.jinja,
    #    meta-llama-Llama-3.2-3B-Instruct.jinja, meta-llama-Llama-4-Scout-17B-16E-Instruct.jinja)
    Case("llama-bare-json", "llama", '{"name": "special_function", "parameters": {"arg1": 1}}', [SF1]),
    Case("llama-typed", "llama", '{"type": "function", "name": "get_weather", "parameters": {"city": "Paris"}}',
         [PARIS]),
    Case("llama-python-tag", "llama", '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
         [PARIS]),
    Case("llama-python-tag-eom", "llama",
         '<|python_tag|>{"name": "special_function", "parameters": {"arg1": 1}}<|eom_id|>', [SF1]),
    Case("llama-builtin-call", "llama", '<|python_tag|>python.call(code="print(1)")',
         [("python", {"code": "print(1)"})]),
    Case("llama-semicolons", "llama",
         '{"name": "special_function", "parameters": {"arg1": 1}}; {"name": "get_weather", "parameters": '
         '{"city": "Paris"}}', [SF1, PARIS]),
    Case("llama-pythonic", "llama", '[get_weather(city="Paris", days=3), special_function(arg1=1)]',
         [("get_weather", {"city": "Paris", "days": 3}), SF1]),
    Case("llama-leading-space", "llama", '  {"name": "special_function", "parameters": {"arg1": 1}}', [SF1]),
    # -- DeepSeek R1 / V3.1 (common_chat_parse_deepseek_r1 / _v3_1; deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja,
    #    deepseek-ai-DeepSeek-V3.1.jinja)
    Case("deepseek-r1", "deepseek",
         "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>special_function\n"
         "```json\n{\"arg1\": 1}\n```"
         "<｜tool▁call▁end｜><｜tool▁calls▁end｜>", [SF1]),
    Case("deepseek-r1-two", "deepseek",
         "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>special_function\n"
         "```json\n{\"arg1\": 1}\n```"
         "<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
         "```json\n{\"city\": \"Paris\"}\n```"
         "<｜tool▁call▁end｜><｜tool▁calls▁end｜>", [SF1, PARIS]),
    Case("deepseek-r1-after-think", "deepseek",
         "<think>I'm\nthinking</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
         "```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>", [PARIS],
         "<think>I'm\nthinking</think>\n\n"),
    Case("deepseek-v31", "deepseek",
         "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>special_function<｜tool▁sep｜>{\"arg1\": 1}<｜tool▁call▁end｜>"
         "<｜tool▁calls▁end｜>", [SF1]),
    Case("deepseek-v31-two", "deepseek",
         "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>special_function<｜tool▁sep｜>{\"arg1\": 1}<｜tool▁call▁end｜>"
         "<｜tool▁call▁begin｜>run_in_terminal<｜tool▁sep｜>{\"command\": \"pwd\"}<｜tool▁call▁end｜>"
         "<｜tool▁calls▁end｜>",
         [SF1, PWD]),
    Case("deepseek-spelling-variant", "deepseek",
         "<｜tool_calls_begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Paris\"}<｜tool▁call▁end｜>"
         "<｜tool▁calls▁end｜>", [PARIS]),
    Case("deepseek-cut-before-end", "deepseek",
         "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Paris\"}", [PARIS]),
    # -- gpt-oss Harmony (common_chat_parse_gpt_oss; openai-gpt-oss-120b.jinja; tests/test-chat.cpp)
    Case("harmony-commentary", "harmony",
         '<|channel|>commentary to=functions.special_function <|constrain|>json<|message|>{"arg1": 1}<|call|>', [SF1]),
    Case("harmony-after-analysis", "harmony",
         "<|channel|>analysis<|message|>I'm\nthinking<|end|><|start|>assistant<|channel|>commentary "
         'to=functions.special_function <|constrain|>json<|message|>{"arg1": 1}', [SF1],
         "<|channel|>analysis<|message|>I'm\nthinking<|end|>"),
    Case("harmony-recipient-first", "harmony",
         '<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}<|call|>',
         [PARIS]),
    Case("harmony-no-constrain", "harmony",
         '<|channel|>commentary to=functions.special_function<|message|>{"arg1": 1}', [SF1]),
    Case("harmony-analysis-channel", "harmony",
         '<|channel|>analysis to=functions.run_in_terminal <|constrain|>json<|message|>{"command": "pwd"}<|call|>',
         [PWD]),
    # -- Kimi K2 (common_chat_parse_kimi_k2; moonshotai-Kimi-K2.jinja)
    Case("kimi-one", "kimi",
         "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
         '{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|>', [PARIS]),
    Case("kimi-two", "kimi",
         "<|tool_calls_section_begin|><|tool_call_begin|>functions.special_function:0<|tool_call_argument_begin|>"
         '{"arg1": 1}<|tool_call_end|><|tool_call_begin|>functions.run_in_terminal:1<|tool_call_argument_begin|>'
         '{"command": "pwd"}<|tool_call_end|><|tool_calls_section_end|>', [SF1, PWD]),
    Case("kimi-text-first", "kimi",
         "Deploying now.<|tool_calls_section_begin|><|tool_call_begin|>functions.run_in_terminal:0"
         '<|tool_call_argument_begin|>{"command": "pwd"}<|tool_call_end|><|tool_calls_section_end|>', [PWD],
         "Deploying now."),
    Case("kimi-bare-call", "kimi",
         '<|tool_call_begin|>functions.special_function:3<|tool_call_argument_begin|>{"arg1": 1}<|tool_call_end|>',
         [SF1]),
    # -- Granite 3.x / Phi-4-mini (Granite params in common/chat.cpp; ibm-granite-granite-3.3-2B-Instruct.jinja,
    #    microsoft-Phi-4-mini-instruct.jinja)
    Case("granite-array", "granite", '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}]', [PARIS]),
    Case("phi-closed", "granite",
         '<|tool_call|>[{"name": "special_function", "arguments": {"arg1": 1}}]<|/tool_call|>', [SF1]),
    Case("granite-two", "granite",
         '<|tool_call|>[{"name": "special_function", "arguments": {"arg1": 1}}, {"name": "get_weather", '
         '"arguments": {"city": "Paris"}}]', [SF1, PARIS]),
    # -- Command R7B / Command A (common_chat_parse_command_r7b; CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja)
    Case("command-r-one", "command_r",
         '<|START_ACTION|>[\n    {"tool_call_id": "0", "tool_name": "special_function", "parameters": {"arg1": 1}}\n]'
         "<|END_ACTION|>", [SF1]),
    Case("command-r-thinking", "command_r",
         "<|START_THINKING|>I should call a tool.<|END_THINKING|><|START_ACTION|>[{\"tool_call_id\": \"0\", "
         '"tool_name": "get_weather", "parameters": {"city": "Paris"}}]<|END_ACTION|>', [PARIS],
         "<|START_THINKING|>I should call a tool.<|END_THINKING|>"),
    Case("command-r-two", "command_r",
         '<|START_ACTION|>[{"tool_call_id": "0", "tool_name": "special_function", "parameters": {"arg1": 1}}, '
         '{"tool_call_id": "1", "tool_name": "run_in_terminal", "parameters": {"command": "pwd"}}]<|END_ACTION|>',
         [SF1, PWD]),
    # -- MiniMax M2 (common_chat_parse_minimax_m2; MiniMax-M2.jinja)
    Case("minimax-one", "minimax",
         '<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris</parameter>\n</invoke>\n'
         "</minimax:tool_call>", [PARIS]),
    Case("minimax-two", "minimax",
         '<minimax:tool_call>\n<invoke name="special_function">\n<parameter name="arg1">1</parameter>\n</invoke>\n'
         '<invoke name="run_in_terminal">\n<parameter name="command">pwd</parameter>\n</invoke>\n</minimax:tool_call>',
         [SF1, PWD]),
    # -- a call in a fence of its own, ending the answer (the Hermes parser's optional ```json / ```xml block)
    Case("fenced-json", "fence", '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```', [PARIS]),
    Case("fenced-hermes", "fence", "I'll look it up.\n```json\n" + HERMES_CALL + "\n```", [PARIS],
         "I'll look it up.\n"),
    Case("fenced-bare", "fence", '```\n{"name": "special_function", "arguments": {"arg1": 1}}\n```\n', [SF1]),
    # -- arguments repaired against the schema (any markup)
    Case("repair-trailing-comma", "repair",
         '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris",},}</tool_call>', [PARIS]),
    Case("repair-single-quotes", "repair",
         "<tool_call>{'name': 'get_weather', 'arguments': {'city': 'Paris', 'units': 'it\\'s \"C\"'}}</tool_call>",
         [("get_weather", {"city": "Paris", "units": "it's \"C\""})]),
    Case("repair-raw-newline", "repair",
         '<tool_call>{"name": "write_file", "arguments": {"path": "a.txt", "content": "line 1\nline 2"}}</tool_call>',
         [("write_file", {"path": "a.txt", "content": "line 1\nline 2"})]),
    Case("repair-python-literals", "repair",
         "[TOOL_CALLS]search[ARGS]{'query': 'x', 'exact': True, 'tags': None}",
         [("search", {"query": "x", "exact": True, "tags": None})]),
    Case("repair-coerce-scalars", "repair",
         '<tool_call>{"name": "search", "arguments": {"query": "x", "limit": "5", "exact": "false", "score": "0.5"}}'
         "</tool_call>", [("search", {"query": "x", "limit": 5, "exact": False, "score": 0.5})]),
    Case("repair-coerce-array", "repair",
         '<tool_call>{"name": "search", "arguments": {"query": "x", "tags": "[\\"a\\", \\"b\\"]"}}</tool_call>',
         [("search", {"query": "x", "tags": ["a", "b"]})]),
    Case("repair-string-to-one-element-array", "repair",
         "<tool_call>\n<function=search>\n<parameter=query>\nx\n</parameter>\n<parameter=tags>\nurgent\n</parameter>\n"
         "</function>\n</tool_call>", [("search", {"query": "x", "tags": ["urgent"]})]),
    Case("repair-string-args-nearly-json", "repair",
         '<|START_ACTION|>[{"tool_call_id": "0", "tool_name": "get_weather", "parameters": "{\'city\': \'Paris\',}"}]'
         "<|END_ACTION|>", [PARIS]),
    # -- look-alikes: markup shown, quoted, unoffered, or broken: the text stays exactly as written
    lookalike("inline-code", "hermes",
              'Wrap calls like `<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>`.'),
    lookalike("sentence-after", "hermes",
              '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call> is the format.'),
    lookalike("quoted", "hermes",
              'The model wrote "<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>"\n'),
    lookalike("python-block", "hermes", '```python\nprint("<tool_call>")\nx = "[TOOL_CALLS]"\n```\nDone.'),
    lookalike("json-example-then-prose", "fence",
              '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```\nThat is how you call it.'),
    lookalike("code-block-with-markup", "qwen_xml",
              "Qwen3-Coder writes:\n```\n" + QWEN_CODER_CALL + "\n```\nand llama.cpp parses it."),
    lookalike("unoffered-tool", "hermes", '<tool_call>{"name": "delete_everything", "arguments": {}}</tool_call>'),
    lookalike("tag-in-prose", "hermes", "The <tool_call> tags wrap each call, and </tool_call> closes it."),
    lookalike("mistral-token-in-prose", "mistral", "Mistral starts calls with [TOOL_CALLS] followed by JSON."),
    lookalike("json-answer-not-a-call", "llama", '{"name": "Alice", "age": 30}'),
    lookalike("json-mid-prose", "llama", 'Here is the object: {"name": "get_weather", "parameters": {}} as data.'),
    lookalike("harmony-final", "harmony", "<|channel|>final<|message|>It is sunny.<|end|>"),
    lookalike("think-holds-markup", "hermes",
              '<think>Maybe <tool_call>{"name": "get_weather", "arguments": {}}</tool_call>?</think>\nNo call needed.'),
    lookalike("unclosed-false-start", "hermes", '<tool_call>{"name": "get_weather", "arguments": {"city": "Par'),
    lookalike("deepseek-explained", "deepseek", "DeepSeek opens with <｜tool▁calls▁begin｜> and then the calls."),
    lookalike("glm-prose", "glm", "<tool_call>get weather for me</tool_call>"),
    lookalike("markdown-link", "mistral", "See [the docs](https://example.com) and `code`."),
    lookalike("pythonic-unoffered", "llama", "[print(1), len(x)]"),
    lookalike("less-than", "hermes", "if a < b and c<d: print('<x>')"),
]
