"""Raw and fill-in-the-middle generation: /api/generate → llama-server's /infill and /completion, and back to NDJSON.

The stream below is what the real llama-server (the e2e tier's build; SmolLM2 with FIM token ids added to its GGUF, as
``tests/e2e/test_ollama_fim_e2e.py`` does) sent for ``/infill`` with ``stream: true`` and ``n_predict: 3``, byte for
byte but the model path; the answers are checked with the ``ollama`` package's own ``GenerateResponse`` model.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from ollama._types import GenerateResponse, ShowResponse

from llamashim.dialects.ollama import completion
from llamashim.dialects.ollama.metadata import show_body
from llamashim.errors import BadRequest
from llamashim.upstream.models import ModelIndex

CLOCK = 1_700_000_000.0

# Continue's autocompletion request (core/llm/llms/Ollama.ts, _streamFim → _getGenerateOptions): undefined fields
# dropped by JSON.stringify, so no ``raw`` and no ``stream``; the stops are its Qwen coder template's and its own.
CONTINUE_FIM: dict[str, Any] = {
    "model": "qwen2.5-coder:1.5b",
    "prompt": "def add(a, b):\n    return ",
    "suffix": "\n\nprint(add(1, 2))\n",
    "options": {
        "temperature": 0.01,
        "num_predict": 4096,
        "stop": ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                 "<|repo_name|>", "<|file_sep|>", "<|im_start|>", "<|im_end|>", "/src/", "#- coding: utf-8", "```"],
        "num_ctx": 8192,
    },
    "keep_alive": 1800,
}

REAL_INFILL_STREAM = (
    b'data: {"index":0,"content":"user","tokens":[4093],"stop":false,"id_slot":-1,"tokens_predicted":1'
    b',"tokens_evaluated":16}\n\ndata: {"index":0,"content":"\\n","tokens":[198],"stop":false,"id_slot":-'
    b'1,"tokens_predicted":2,"tokens_evaluated":16}\n\ndata: {"index":0,"content":"How","tokens":[2020],'
    b'"stop":false,"id_slot":-1,"tokens_predicted":3,"tokens_evaluated":16}\n\ndata: {"index":0,"content'
    b'":"","tokens":[],"id_slot":1,"stop":true,"model":"/models/SmolLM2-135M-fim.gguf","tokens_predict'
    b'ed":3,"tokens_evaluated":16,"generation_settings":{"seed":4294967295,"temperature":0.0,"dynatemp'
    b'_range":0.0,"dynatemp_exponent":1.0,"top_k":40,"top_p":0.949999988079071,"min_p":0.0500000007450'
    b'5806,"top_n_sigma":-1.0,"xtc_probability":0.0,"xtc_threshold":0.10000000149011612,"typical_p":1.'
    b'0,"repeat_last_n":64,"repeat_penalty":1.0,"presence_penalty":0.0,"frequency_penalty":0.0,"dry_mu'
    b'ltiplier":0.0,"dry_base":1.75,"dry_allowed_length":2,"dry_penalty_last_n":64,"dry_sequence_break'
    b'ers":["\\n",":","\\"","*"],"mirostat":0,"mirostat_tau":5.0,"mirostat_eta":0.10000000149011612,"ada'
    b'ptive_target":-1.0,"adaptive_decay":0.8999999761581421,"stop":[],"max_tokens":3,"n_predict":3,"n'
    b'_keep":0,"n_discard":0,"ignore_eos":false,"stream":true,"logit_bias":[],"n_probs":0,"min_keep":0'
    b',"grammar":"","grammar_lazy":false,"grammar_triggers":[],"preserved_tokens":[],"chat_format":"Co'
    b'ntent-only","reasoning_format":"deepseek","reasoning_in_content":false,"generation_prompt":"","s'
    b'amplers":["penalties","dry","top_n_sigma","top_k","typ_p","top_p","min_p","xtc","temperature"],"'
    b'speculative.types":"none","timings_per_token":false,"post_sampling_probs":false,"backend_samplin'
    b'g":false,"lora":[]},"prompt":"project\\n<jupyter_text>def add(a, b):\\n    return <jupyter_code>\\n'
    b'<jupyter_output>","has_new_line":true,"truncated":false,"stop_type":"limit","stopping_word":"","'
    b'tokens_cached":18,"timings":{"cache_n":3,"prompt_n":13,"prompt_ms":223.822,"prompt_per_token_ms"'
    b':17.217076923076924,"prompt_per_second":58.08186862774883,"predicted_n":3,"predicted_ms":89.529,'
    b'"predicted_per_token_ms":44.7645,"predicted_per_second":22.339130337655956}}\n\n'
)


def lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


@pytest.mark.parametrize(
    ("body", "native"),
    [({"suffix": "x"}, True), ({"raw": True}, True), ({"suffix": ""}, False), ({"raw": False}, False),
     ({"suffix": None, "raw": "yes"}, False), ({}, False)],
)
def test_which_generate_bodies_go_native(body: dict[str, Any], native: bool) -> None:
    """A non-empty suffix or raw: true goes to /infill or /completion; an empty suffix is none, as in Ollama."""
    assert completion.is_native(body) is native


def test_continues_fim_request_becomes_an_infill_request() -> None:
    """Continue's exact request maps to /infill: prefix, suffix, native sampling names; num_ctx is reported."""
    native = completion.native_request(CONTINUE_FIM)
    assert native.path == b"/infill" and native.infill and native.stream and native.model == "qwen2.5-coder:1.5b"
    assert native.body == {
        "model": "qwen2.5-coder:1.5b",  # as the client named it: the flow's model index resolves it
        "input_prefix": CONTINUE_FIM["prompt"],
        "input_suffix": CONTINUE_FIM["suffix"],
        "stream": True,
        "temperature": 0.01,
        "n_predict": 4096,
        "stop": CONTINUE_FIM["options"]["stop"],
    }
    assert native.ignored == ["num_ctx"] and native.unused == []


def test_raw_request_becomes_a_completion_request() -> None:
    """raw: true sends the prompt verbatim to /completion; format json is any-JSON, a schema is passed on."""
    native = completion.native_request(
        {"model": "m", "prompt": "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>", "raw": True, "stream": False,
         "system": "ignored", "format": "json", "options": {"num_predict": -1, "num_keep": 4, "grammar": "g"}},
    )
    assert native.path == b"/completion" and not native.infill and not native.stream
    assert native.body == {"model": "m", "prompt": "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>", "stream": False,
                           "json_schema": {}, "n_keep": 4, "grammar": "g"}
    assert native.unused == ["system"]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert completion.native_request({"model": "m", "raw": True, "format": schema}).body["json_schema"] == schema


@pytest.mark.parametrize(
    "body",
    [{"raw": True}, {"model": "m", "raw": True, "prompt": 3}, {"model": "m", "suffix": "s", "images": ["aGk="]},
     {"model": "m", "raw": True, "stream": "yes"}, {"model": "m", "raw": True, "format": 1},
     {"model": "m", "raw": True, "options": [1]}],
)
def test_bad_native_requests_are_400(body: dict[str, Any]) -> None:
    """No model, a non-string prompt, images, a bad stream flag, format or options: a 400."""
    with pytest.raises(BadRequest):
        completion.native_request(body)


def test_the_real_infill_stream_becomes_generate_lines() -> None:
    """The real server's /infill stream becomes response lines and a done line with counts and durations."""
    enc = completion.CompletionStream("qwen2.5-coder:1.5b", lambda: CLOCK)
    out = enc.feed(REAL_INFILL_STREAM) + enc.finish()
    parsed = [GenerateResponse.model_validate(v) for v in lines(out)]
    assert [p.response for p in parsed] == ["user", "\n", "How", ""]
    assert [p.done for p in parsed] == [False, False, False, True]
    last = parsed[-1]
    assert last.done_reason == "length" and (last.prompt_eval_count, last.eval_count) == (16, 3)
    assert (last.prompt_eval_duration, last.eval_duration) == (223_822_000, 89_529_000)
    assert last.total_duration == 223_822_000 + 89_529_000
    assert lines(out)[0]["model"] == "qwen2.5-coder:1.5b" and lines(out)[0]["created_at"].startswith("2023-11-14T")
    assert enc.ended and enc.error is None and enc.usage is not None
    assert (enc.usage.prompt_tokens, enc.usage.completion_tokens) == (16, 3)


def test_every_split_of_the_stream_gives_the_same_lines() -> None:
    """Fed in two reads split at any byte, the stream encodes to the same NDJSON."""
    whole = completion.CompletionStream("m", lambda: CLOCK)
    expected = whole.feed(REAL_INFILL_STREAM) + whole.finish()
    for cut in range(0, len(REAL_INFILL_STREAM), 7):
        enc = completion.CompletionStream("m", lambda: CLOCK)
        got = enc.feed(REAL_INFILL_STREAM[:cut]) + enc.feed(REAL_INFILL_STREAM[cut:]) + enc.finish()
        assert got == expected, cut


@pytest.mark.parametrize(
    ("tail", "needle"),
    [
        (b'data: {"error":{"code":500,"message":"kv cache full","type":"server_error"}}\n\n', "kv cache full"),
        (b'error: {"code":500,"message":"legacy failure","type":"server_error"}\n\n', "legacy failure"),
        (b"data: not json\n\n", "not JSON"),
        (b"data: [DONE]\n\n", "without its final event"),
        (b"", "before it was complete"),
    ],
)
def test_stream_failures_end_with_an_error_line(tail: bytes, needle: str) -> None:
    """An upstream error event, garbage, a [DONE] or truncation ends the lines with one {"error": ...} line."""
    first = REAL_INFILL_STREAM.split(b"\n\n")[0] + b"\n\n"
    enc = completion.CompletionStream("m", lambda: CLOCK)
    out = enc.feed(first + tail) + enc.finish()
    got = lines(out)
    assert got[0]["response"] == "user" and set(got[-1]) == {"error"} and needle in got[-1]["error"]
    assert enc.ended and enc.error is not None and enc.fail("again") == b"" and enc.feed(first) == b""


def test_a_stop_word_and_end_of_text_are_done_reason_stop() -> None:
    """stop_type word or eos gives done_reason stop; limit gives length."""
    for stop_type, reason in (("word", "stop"), ("eos", "stop"), ("limit", "length")):
        enc = completion.CompletionStream("m", lambda: CLOCK)
        out = enc.event({"content": "x", "stop": True, "stop_type": stop_type})
        assert [v.get("done_reason") for v in lines(out)] == [None, reason]


def test_non_streamed_answer() -> None:
    """A non-streamed /completion answer is one done GenerateResponse with the whole text and counts."""
    reply = {"content": " Paris.\n\n", "stop": True, "stop_type": "limit", "tokens_predicted": 4,
             "tokens_evaluated": 5, "timings": {"prompt_n": 5, "prompt_ms": 782.877, "predicted_n": 4,
                                                "predicted_ms": 175.556}}
    parsed = GenerateResponse.model_validate(completion.reply_to_ollama(reply, "m", CLOCK))
    assert parsed.response == " Paris.\n\n" and parsed.done and parsed.done_reason == "length"
    assert (parsed.prompt_eval_count, parsed.eval_count, parsed.eval_duration) == (5, 4, 175_556_000)
    no_counts = completion.completion_usage({"timings": {"prompt_n": 2, "cache_n": 3, "predicted_n": 1}})
    assert (no_counts.prompt_tokens, no_counts.completion_tokens, no_counts.cached_tokens) == (5, 1, 3)


def test_a_model_without_fim_tokens_is_ollamas_does_not_support_insert() -> None:
    """llama-server's 501 for /infill becomes a 400 naming the model and its reason; other errors pass as they are."""
    body = (b'{"error":{"code":501,"message":"Infill is not supported by this model: prefix token is missing. '
            b'suffix token is missing. middle token is missing. ","type":"not_supported_error"}}')
    err = completion.upstream_failure(501, body, "smollm2", infill=True)
    assert err.status == 400 and err.message.startswith('"smollm2" does not support insert')
    assert err.message.endswith("middle token is missing.")
    other = completion.upstream_failure(400, b'{"error":{"code":400,"message":"bad","type":"x"}}', "m", True)
    assert (other.status, other.message) == (400, "bad")
    assert completion.upstream_failure(501, body, "m", infill=False).status == 501


@pytest.mark.parametrize(
    ("status", "body", "fim"),
    [
        (501, b'{"error":{"code":501,"message":"Infill is not supported by this model: x","type":"n"}}', False),
        (400, b'{"error":{"code":400,"message":"\\"input_extra\\" must be an array of {}","type":"i"}}', True),
        (200, b'{"content":"x","stop":true}', True),
        (404, b"Not Found", False),
        (503, b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}', None),
        (500, b"oops", None),
    ],
)
def test_the_fim_probe_answer(status: int, body: bytes, fim: bool | None) -> None:
    """501 means no FIM tokens; the input_extra 400 (validation after the token check) or a 200 means FIM."""
    assert completion.probe_result(status, body) is fim


def test_show_says_insert_for_a_model_that_fills_in_the_middle() -> None:
    """show_body with fim lists insert and puts .Suffix in the template (what Continue looks for)."""
    index = ModelIndex()
    index.set_upstream("u", {"data": [{"id": "/m/coder.gguf"}]}, None)
    model = index.models()[0]
    props = {"chat_template": "{{ messages }}", "chat_template_caps": {"supports_tools": True}}
    shown = show_body(model, props, fim=True)
    parsed = ShowResponse.model_validate(shown)
    assert parsed.capabilities == ["completion", "tools", "insert"]
    assert parsed.template is not None and ".Suffix" in parsed.template and parsed.template.startswith("{{ messages")
    plain = show_body(model, props)
    assert ".Suffix" not in plain["template"] and "insert" not in plain["capabilities"]
