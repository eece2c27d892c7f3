"""Rationale source (b) of docs/method.md section 1: a teacher VLM behind an OpenAI-compatible endpoint.

Any server that speaks the OpenAI chat-completions protocol with image content blocks works:
vLLM (`vllm serve Qwen/Qwen2-VL-72B-Instruct`), TGI, `transformers serve`, or the project's own
`python -m tools.serve` for a local LVLM. Two jobs, one client:
- `synthesize_rationales`: image + question + gold answer -> a rationale; a reply is kept only
  when its parsed answer equals the gold answer (`data.scoring.parse_response`, fail closed);
- `describe_images`: image -> a reference description for the R-Scorer.

A failed request or a malformed reply never stops the batch: the row is dropped with its
reason and the raw reply (or the error) kept for audit (distilabel's rule). The standard
library's HTTP client is enough here: one POST per row, threads for concurrency.

    python -m models.teacher --endpoint http://127.0.0.1:8000/v1 --model NAME --n 8
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import threading
import time
import uuid
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from data.config import TeacherConfig, DataConfig
from data.scoring import gold_answer, parse_response
from data.shapes import generate

Progress = Callable[[int, int], None] | None
RATIONALE_TEMPLATE = "teacher_rationale.txt"
DESCRIBE_TEMPLATE = "teacher_describe.txt"


class TeacherError(RuntimeError):
    """The endpoint failed for one request after all retries (the message says how)."""


class TeacherUnavailable(ValueError):
    """Too many of a stage's teacher requests failed even after retries (a ValueError: `src run`
    prints one line and exits 2); what was answered is cached, so a re-run asks only the rest."""


def prompt_template(name: str) -> str:
    return resources.files("data.prompts").joinpath(name).read_text("utf-8").strip()


def image_data_url(png: bytes) -> str:
    """PNG bytes as a `data:` URL, the form every OpenAI-compatible server accepts inline."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def rationale_messages(question: str, gold: str, png: bytes) -> list[dict[str, Any]]:
    """One user turn: the image, then the instruction with question and gold answer filled in."""
    text = prompt_template(RATIONALE_TEMPLATE).format_map({"question": question.strip(), "gold": gold})
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_data_url(png)}},
        {"type": "text", "text": text}]}]


def describe_messages(png: bytes) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_data_url(png)}},
        {"type": "text", "text": prompt_template(DESCRIBE_TEMPLATE)}]}]


@dataclass
class TeacherClient:
    """Minimal OpenAI chat-completions client: POST `{endpoint}/chat/completions`, retried.

    With `cache_dir`, every successful reply is kept under the sha256 of the request body (the
    model name, the messages with the image bytes in them, temperature, max_tokens): a re-run
    asks nothing twice, and a changed prompt, image or model asks again. Failures are not
    cached. `hits` / `misses` count this client's look-ups.
    """

    cfg: TeacherConfig
    cache_dir: Path | None = None
    hits: int = 0
    misses: int = 0

    def __post_init__(self) -> None:
        if not self.cfg.endpoint or not self.cfg.model:
            raise ValueError(f"teacher needs teacher.endpoint and teacher.model (got endpoint="
                             f"{self.cfg.endpoint!r}, model={self.cfg.model!r})")
        self.url = self.cfg.endpoint.rstrip("/") + "/chat/completions"
        self.api_key = os.environ.get(self.cfg.api_key_env, "")
        self._count = threading.Lock()

    def _cached(self, body: bytes) -> tuple[Path | None, dict | None]:
        if self.cache_dir is None:
            return None, None
        key = hashlib.sha256(body).hexdigest()
        path = Path(self.cache_dir) / key[:2] / f"{key}.json"
        try:
            kept = json.loads(path.read_text())
            kept["reply"]  # noqa: B018 - a file cut short by a kill has none: ask again
        except (OSError, ValueError, KeyError, TypeError):
            kept = None
        with self._count:
            if kept is None:
                self.misses += 1
            else:
                self.hits += 1
        return path, kept

    @staticmethod
    def _keep(path: Path, kept: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")  # threads write in parallel
        tmp.write_text(json.dumps(kept))
        os.replace(tmp, path)

    def chat(self, messages: list[dict[str, Any]]) -> str:
        """The reply text of one chat request (`ask` without log-probabilities)."""
        return self.ask(messages)[0]

    def ask(self, messages: list[dict[str, Any]], logprobs: bool = False) -> tuple[str, dict[str, float] | None]:
        """(reply text, {token: log-probability} of the reply's first token) of one chat request.

        With `logprobs`, the request asks for the first tokens' top log-probabilities (vLLM, TGI
        and OpenAI return them; a server that does not gives None and the caller falls back on
        the text).

        Raises:
            TeacherError: still failing after `cfg.retries` retries (HTTP error, unreachable
                server, or a reply without `choices[0].message.content`).
        """
        req_body: dict[str, Any] = {"model": self.cfg.model, "messages": messages,
                                    "temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens}
        if logprobs:
            req_body.update(logprobs=True, top_logprobs=5)
        body = json.dumps(req_body, sort_keys=True).encode()
        cache, kept = self._cached(body)
        if kept is not None:
            return kept["reply"], kept.get("top")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                time.sleep(min(30.0, 0.5 * 2 ** (attempt - 1)))
            try:
                req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                    reply = json.loads(resp.read().decode("utf-8"))
                text = str(reply["choices"][0]["message"]["content"])
                top = first_token_logprobs(reply) if logprobs else None
                if cache is not None:
                    self._keep(cache, {"reply": text, "top": top})
                return text, top
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code} from {self.url}: {err.read()[:200]!r}"
                if 400 <= err.code < 500 and err.code != 429:  # our request is wrong: no retry
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
                last = f"{self.url} unreachable: {err}"
            except (KeyError, IndexError, TypeError, ValueError) as err:
                last = f"malformed reply from {self.url}: {err!r}"
        raise TeacherError(last)

    def map(self, requests: Sequence[list[dict[str, Any]]],
            progress: Progress = None) -> list[tuple[str | None, str | None]]:
        """(reply, error) per request, in input order, `cfg.concurrency` requests at a time."""
        return [(r[0] if r else None, e) for r, e in self.map_ask(requests, progress)]

    def map_ask(self, requests: Sequence[list[dict[str, Any]]], progress: Progress = None,
                logprobs: bool = False) -> list[tuple[tuple[str, dict[str, float] | None] | None, str | None]]:
        """((reply, first-token log-probabilities), error) per request (`ask`), in input order,
        `cfg.concurrency` at a time. A failed request is (None, why), never an exception."""
        def one(messages: list[dict[str, Any]]):
            try:
                return self.ask(messages, logprobs), None
            except TeacherError as err:
                return None, str(err)

        out: list = []
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            for res in pool.map(one, requests):
                out.append(res)
                if progress:
                    progress(len(out), len(requests))
        return out


def first_token_logprobs(reply: dict[str, Any]) -> dict[str, float] | None:
    """{token: log-probability} of the first generated token of an OpenAI chat reply
    (`choices[0].logprobs.content[0].top_logprobs`); None where the server gave none."""
    try:
        first = reply["choices"][0]["logprobs"]["content"][0]
    except (KeyError, IndexError, TypeError):
        return None
    top = {str(t["token"]): float(t["logprob"]) for t in first.get("top_logprobs") or [] if "token" in t}
    if "token" in first and "logprob" in first:
        top.setdefault(str(first["token"]), float(first["logprob"]))
    return top or None


def png_of(record: dict[str, Any]) -> bytes:
    img = record.get("image")
    if isinstance(img, dict):  # datasets' Image feature: {"bytes": ..., "path": ...}
        img = img.get("bytes")
    if not isinstance(img, (bytes, bytearray)) or not img:
        raise ValueError(f"record {record.get('id', '?')!r}: field 'image' holds no image bytes")
    return bytes(img)


def synthesize_rationales(client: TeacherClient, records: Sequence[dict[str, Any]],
                          progress: Progress = None) -> tuple[list[dict], list[dict]]:
    """Teacher rationales for records with `id, image, question, answer`: (kept, dropped).

    One request per record (image + question + gold answer), then `filter_rationales`.
    """
    replies = client.map([rationale_messages(r["question"], str(r["answer"]), png_of(r))
                          for r in records], progress)
    return filter_rationales(records, replies)


def filter_rationales(records: Sequence[dict[str, Any]],
                      replies: Sequence[tuple[str | None, str | None]]) -> tuple[list[dict], list[dict]]:
    """Keep a teacher reply only when its parsed answer equals the record's gold answer.

    Kept rows are the records with `rationale` and `response` (`<rationale> Answer: <gold>.`)
    replaced by the teacher's; dropped rows are `{id, reason, raw}` with reason
    `request_failed`, `unparsable` (no `Answer:`), `empty_rationale` or `answer_mismatch`.

    >>> rec = {"id": "q1", "answer": "2"}
    >>> filter_rationales([rec], [("Two red things. Answer: 2.", None)])[0][0]["response"]
    'Two red things. Answer: 2.'
    >>> filter_rationales([rec], [("Three. Answer: 3", None)])[1][0]["reason"]
    'answer_mismatch'
    """
    if len(records) != len(replies):
        raise ValueError(f"{len(replies)} teacher replies for {len(records)} records")
    kept, dropped = [], []
    for rec, (reply, error) in zip(records, replies):
        if reply is None:
            dropped.append({"id": rec["id"], "reason": "request_failed", "raw": error})
            continue
        parsed = parse_response(reply, rec.get("choices"))
        if not parsed.ok:
            reason = "unparsable"
        elif not parsed.rationale:
            reason = "empty_rationale"
        elif parsed.answer != gold_answer(rec["answer"], rec.get("choices")):
            reason = "answer_mismatch"
        else:
            rationale = " ".join(parsed.rationale.split())
            kept.append({**rec, "rationale": rationale,
                         "response": f"{rationale} Answer: {rec['answer']}."})
            continue
        dropped.append({"id": rec["id"], "reason": reason, "raw": reply})
    return kept, dropped


def describe_images(client: TeacherClient, records: Sequence[dict[str, Any]],
                    progress: Progress = None) -> tuple[list[dict], list[dict]]:
    """Reference descriptions (`reference`) written by the teacher; (described, dropped)."""
    replies = client.map([describe_messages(png_of(r)) for r in records], progress)
    kept, dropped = [], []
    for rec, (reply, error) in zip(records, replies):
        text = " ".join((reply or "").split())
        if text:
            kept.append({**rec, "reference": text})
        else:
            dropped.append({"id": rec["id"], "reason": "request_failed" if reply is None else "empty",
                            "raw": error if reply is None else reply})
    return kept, dropped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Ask a teacher endpoint for rationales of shapes questions.")
    ap.add_argument("--endpoint", required=True, help="e.g. http://127.0.0.1:8000/v1")
    ap.add_argument("--model", required=True, help="model name the endpoint serves")
    ap.add_argument("--n", type=int, default=8, help="rationale-split questions to ask about")
    args = ap.parse_args(argv)
    client = TeacherClient(TeacherConfig(endpoint=args.endpoint, model=args.model))
    kept, dropped = synthesize_rationales(client, generate("rationale", args.n, DataConfig()))
    for row in kept:
        print("kept   ", row["id"], row["response"])
    for row in dropped:
        print("dropped", row["id"], row["reason"], (row["raw"] or "")[:120])
    print(f"kept {len(kept)} of {len(kept) + len(dropped)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
