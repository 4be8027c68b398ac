import hashlib
import os
import subprocess
import sys

from lakeloom.engine.tokens import count_prompt_tokens, count_texts, encoding_name_for


def test_encodings_chosen_by_model_family():
    assert encoding_name_for("gpt-4o-mini-2024-07-18") == "o200k_base"
    assert encoding_name_for("gpt-4.1-nano") == "o200k_base"
    assert encoding_name_for("gpt-5") == "o200k_base"
    assert encoding_name_for("gpt-3.5-turbo") == "cl100k_base"
    assert encoding_name_for("text-embedding-3-small") == "cl100k_base"
    assert encoding_name_for("smollm2-135m-instruct") == "cl100k_base"


def test_known_counts():
    assert count_texts(["hello world", "tiktoken is great!"], "gpt-3.5-turbo") == [2, 6]
    assert count_texts(["hello world"], "gpt-4o") == [2]
    assert count_texts([], "gpt-4o") == []


def test_chat_overhead_and_embeddings():
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello world"}]}
    (chat,) = count_prompt_tokens("chat.completions", [body])
    assert chat == 2 + 1 + 3 + 3  # content + role + per-message + reply priming
    two = {**body, "messages": body["messages"] * 2}
    assert count_prompt_tokens("chat.completions", [two])[0] == chat + 2 + 1 + 3
    emb = count_prompt_tokens(
        "embeddings",
        [{"model": "text-embedding-3-small", "input": ["hello world", "hi"]}],
    )
    assert emb == [3]


def test_seeds_a_fresh_cache_offline(tmp_path):
    """A fresh machine: empty cache folder, no network; counting still works."""
    cache = tmp_path / "tk"
    code = (
        "import socket\n"
        "def deny(*a, **k): raise OSError('network disabled in this test')\n"
        "socket.socket.connect = deny\n"
        "from lakeloom.engine.tokens import count_texts\n"
        "print(count_texts(['hello world'], 'gpt-4o')[0], count_texts(['hi'], 'gpt-4')[0])\n"
    )
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "1"]
    names = {
        hashlib.sha1(
            f"https://openaipublic.blob.core.windows.net/encodings/{n}.tiktoken".encode()
        ).hexdigest()
        for n in ("cl100k_base", "o200k_base")
    }
    assert names <= {p.name for p in cache.iterdir()}
