"""End-to-end: Ollama fill-in-the-middle and raw generation through the real daemon and a real llama-server.

Two real llama-servers: the session's SmolLM2-135M, which has no FIM tokens (so ``/infill`` answers its real 501),
and one on a copy of the same GGUF with FIM token ids added to its metadata (``tokenizer.ggml.fim_pre_token_id`` and
friends, pointing at three of SmolLM2's unused special tokens), so the real ``/infill`` runs: the text it writes is
meaningless, but the request shape, the stream and the counts are the real server's. No small GGUF model with FIM
tokens ships in a package this tier can install. Continue's autocompletion is replayed as its ``Ollama.ts`` sends it
(``/api/show``, then ``/api/generate`` with ``suffix``), with ``num_predict`` 8 instead of its 4096 default.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ollama
import pytest
from ollama._types import GenerateResponse

from tests.e2e.conftest import RealLlama
from tests.e2e.daemon import Daemon, StartShim, free_port, stop_process, wait_healthy
from tests.support import ndjson

CONTINUE_MODEL = "qwen2.5-coder:1.5b"  # the name in the user's Continue config; one upstream model serves any name
CONTINUE_STOPS = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                  "<|repo_name|>", "<|file_sep|>", "<|im_start|>", "<|im_end|>", "/src/", "#- coding: utf-8", "```"]
CONTINUE_FIM: dict[str, Any] = {
    "model": CONTINUE_MODEL,
    "prompt": "def add(a, b):\n    return ",
    "suffix": "\n\nprint(add(1, 2))\n",
    "options": {"temperature": 0.01, "num_predict": 8, "stop": CONTINUE_STOPS, "num_ctx": 8192},
    "keep_alive": 1800,
}
FIM_IDS = {"tokenizer.ggml.fim_pre_token_id": 12, "tokenizer.ggml.fim_suf_token_id": 13,
           "tokenizer.ggml.fim_mid_token_id": 14}  # <jupyter_start>, <jupyter_text>, <jupyter_code>: unused


# -- a GGUF with FIM token ids ------------------------------------------------------------------------------------

_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value type → bytes
_UINT32 = 4


def with_uint32_keys(src: Path, dst: Path, keys: dict[str, int]) -> None:
    """Copy the GGUF file ``src`` to ``dst`` with ``keys`` added to its metadata as uint32 values (GGUF v2/v3:
    header, key/values, tensor infos, padding to the alignment, then the tensor data, whose offsets are relative
    to its start and so unchanged)."""
    with open(src, "rb") as f:
        magic, version, n_tensors, n_kv = struct.unpack("<4sIQQ", f.read(24))
        assert magic == b"GGUF" and version in (2, 3), (magic, version)
        head = f.read(64 * 1024 * 1024)
    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, head, pos)
        pos += struct.calcsize(fmt)
        return int(value)

    def string() -> bytes:
        nonlocal pos
        n = take("<Q")
        pos += n
        return head[pos - n : pos]

    def skip(kind: int) -> None:
        nonlocal pos
        if kind == 8:
            string()
        elif kind == 9:
            item, count = take("<I"), take("<Q")
            for _ in range(count):
                skip(item)
        else:
            pos += _SCALAR_SIZES[kind]

    alignment = 32
    for _ in range(n_kv):
        key, kind = string(), take("<I")
        if key == b"general.alignment":
            alignment = struct.unpack_from("<I", head, pos)[0]
        skip(kind)
    kv_end = pos
    for _ in range(n_tensors):
        string()
        dims = take("<I")
        pos += 8 * dims + 4 + 8  # dimensions, type, offset
    data_start = 24 + pos + (-(24 + pos) % alignment)
    added = b"".join(struct.pack("<Q", len(k)) + k.encode() + struct.pack("<II", _UINT32, v) for k, v in keys.items())
    out = struct.pack("<4sIQQ", magic, version, n_tensors, n_kv + len(keys)) + head[:kv_end] + added + head[kv_end:pos]
    out += b"\0" * (-len(out) % alignment)
    with open(src, "rb") as f, open(dst, "wb") as w:
        w.write(out)
        f.seek(data_start)
        shutil.copyfileobj(f, w, 1 << 20)


# -- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fim_llama(real_llama: RealLlama, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real llama-server on SmolLM2 with FIM token ids: its URL."""
    tmp = tmp_path_factory.mktemp("fim")
    model = tmp / "SmolLM2-135M-fim.gguf"
    with_uint32_keys(Path(real_llama.model), model, FIM_IDS)
    port = free_port()
    with open(tmp / "llama-server.log", "wb") as log:
        proc = subprocess.Popen(
            [real_llama.paths.binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-c", "4096",
             "-np", "1"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, time.monotonic() + 60)
        yield url
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def fim_shim(fim_llama: str, shim_daemon: StartShim) -> Iterator[Daemon]:
    with shim_daemon(fim_llama) as d:
        yield d


@pytest.fixture(scope="module")
def plain_shim(real_llama: RealLlama, shim_daemon: StartShim) -> Iterator[Daemon]:
    with shim_daemon(real_llama.url) as d:
        yield d


def post(url: str, body: dict[str, Any]) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def generated(body: bytes) -> list[GenerateResponse]:
    return [GenerateResponse.model_validate(value) for value in ndjson(body)]


# -- tests ----------------------------------------------------------------------------------------------------------


def test_continue_autocompletion_against_a_real_infill(fim_shim: Daemon, fim_llama: str) -> None:
    """Continue's show then FIM request stream the real /infill as NDJSON, the same text and counts it gives."""
    status, body = post(fim_shim.url + "/api/show", {"name": CONTINUE_MODEL})
    shown = json.loads(body)
    assert status == 200 and "insert" in shown["capabilities"] and ".Suffix" in shown["template"]
    status, body = post(fim_shim.url + "/api/generate", CONTINUE_FIM)
    assert status == 200
    lines = generated(body)
    text = "".join(line.response or "" for line in lines)
    last = lines[-1]
    assert last.done and not any(line.done for line in lines[:-1]) and text
    assert last.done_reason in ("length", "stop") and last.eval_count is not None and 0 < last.eval_count <= 8
    assert last.prompt_eval_count and last.prompt_eval_count > 10 and last.eval_duration and last.prompt_eval_duration
    # The same request straight to llama-server (the body llamashim sends), not streamed: the same completion.
    status, direct = post(fim_llama + "/infill", {
        "input_prefix": CONTINUE_FIM["prompt"], "input_suffix": CONTINUE_FIM["suffix"], "temperature": 0.01,
        "n_predict": 8, "stop": CONTINUE_STOPS,
    })
    assert status == 200 and json.loads(direct)["content"] == text
    assert json.loads(direct)["tokens_predicted"] == last.eval_count


def test_the_ollama_client_fills_in_the_middle_for_real(fim_shim: Daemon) -> None:
    """The ollama client's generate with suffix (not streamed) and raw (streamed) answer from the real server."""
    client = ollama.Client(host=fim_shim.url, timeout=120)
    whole = client.generate(model=CONTINUE_MODEL, prompt="x = ", suffix="\n", options={"num_predict": 4})
    assert whole.done and whole.eval_count and 0 < whole.eval_count <= 4
    parts = list(client.generate(model=CONTINUE_MODEL, prompt="The capital of France is", raw=True, stream=True,
                                 options={"num_predict": 4, "temperature": 0}))
    assert parts[-1].done and parts[-1].done_reason == "length" and parts[-1].eval_count == 4
    assert "".join(p.response or "" for p in parts).strip()


def test_a_real_model_without_fim_tokens(plain_shim: Daemon) -> None:
    """Against SmolLM2 as shipped: show has no insert, and a suffix request is a 400 with llama-server's reason."""
    status, body = post(plain_shim.url + "/api/show", {"name": CONTINUE_MODEL})
    shown = json.loads(body)
    assert status == 200 and "insert" not in shown["capabilities"] and ".Suffix" not in shown["template"]
    status, body = post(plain_shim.url + "/api/generate", CONTINUE_FIM)
    assert status == 400
    message = json.loads(body)["error"]
    assert message.startswith(f'"{CONTINUE_MODEL}" does not support insert')
    assert "Infill is not supported by this model: prefix token is missing." in message


def test_raw_generate_on_the_real_server(plain_shim: Daemon, real_llama: RealLlama) -> None:
    """raw: true streams the real /completion: the text and counts a direct /completion call gives."""
    prompt = "The capital of France is"
    status, body = post(plain_shim.url + "/api/generate", {
        "model": CONTINUE_MODEL, "prompt": prompt, "raw": True, "options": {"num_predict": 6, "temperature": 0}})
    lines = generated(body)
    assert status == 200 and lines[-1].done and lines[-1].eval_count == 6 and lines[-1].done_reason == "length"
    status, direct = post(real_llama.url + "/completion", {"prompt": prompt, "n_predict": 6, "temperature": 0})
    assert status == 200 and json.loads(direct)["content"] == "".join(line.response or "" for line in lines)
    assert json.loads(direct)["tokens_evaluated"] == lines[-1].prompt_eval_count
