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

from data.config import TeacherConfig
from data.scoring import gold_answer, parse_response

Progress = Callable[[int, int], None] | None
RATIONALE_TEMPLATE = "teacher_rationale.txt"
DESCRIBE_TEMPLATE = "teacher_describe.txt"


class TeacherError(RuntimeError):
    """The endpoint failed for one request after all retries (the message says how)."""


def _template(name: str) -> str:
    return resources.files("data.prompts").joinpath(name).read_text("utf-8").strip()


def image_data_url(png: bytes) -> str:
    """PNG bytes as a `data:` URL, the form every OpenAI-compatible server accepts inline."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def rationale_messages(question: str, gold: str, png: bytes) -> list[dict[str, Any]]:
    """One user turn: the image, then the instruction with question and gold answer filled in."""
    text = _template(RATIONALE_TEMPLATE).format_map({"question": question.strip(), "gold": gold})
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_data_url(png)}},
        {"type": "text", "text": text}]}]


def describe_messages(png: bytes) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_data_url(png)}},
        {"type": "text", "text": _template(DESCRIBE_TEMPLATE)}]}]


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

    def _cached(self, body: bytes) -> tuple[Path | None, str | None]:
        if self.cache_dir is None:
            return None, None
        key = hashlib.sha256(body).hexdigest()
        path = Path(self.cache_dir) / key[:2] / f"{key}.json"
        try:
            reply = json.loads(path.read_text())["reply"]
        except (OSError, ValueError, KeyError):  # absent, or cut short by a kill: ask again
            reply = None
        with self._count:
            if reply is None:
                self.misses += 1
            else:
                self.hits += 1
        return path, reply

    @staticmethod
    def _keep(path: Path, reply: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")  # threads write in parallel
        tmp.write_text(json.dumps({"reply": reply}))
        os.replace(tmp, path)

    def chat(self, messages: list[dict[str, Any]]) -> str:
        """The reply text of one chat request.

        Raises:
            TeacherError: still failing after `cfg.retries` retries (HTTP error, unreachable
                server, or a reply without `choices[0].message.content`).
        """
        body = json.dumps({"model": self.cfg.model, "messages": messages,
                           "temperature": self.cfg.temperature,
                           "max_tokens": self.cfg.max_tokens}, sort_keys=True).encode()
        cache, reply = self._cached(body)
        if reply is not None:
            return reply
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
                if cache is not None:
                    self._keep(cache, text)
                return text
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code} from {self.url}: {err.read()[:200]!r}"
                if 400 <= err.code < 500 and err.code != 429:  # our request is wrong: no retry
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last = f"{self.url} unreachable: {err}"
            except (KeyError, IndexError, TypeError, ValueError) as err:
                last = f"malformed reply from {self.url}: {err!r}"
        raise TeacherError(last)

    def map(self, requests: Sequence[list[dict[str, Any]]],
            progress: Progress = None) -> list[tuple[str | None, str | None]]:
        """(reply, error) per request, in input order, `cfg.concurrency` requests at a time."""
        def one(messages: list[dict[str, Any]]) -> tuple[str | None, str | None]:
            try:
                return self.chat(messages), None
            except TeacherError as err:
                return None, str(err)

        out: list[tuple[str | None, str | None]] = []
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            for res in pool.map(one, requests):
                out.append(res)
                if progress:
                    progress(len(out), len(requests))
        return out


def _png(record: dict[str, Any]) -> bytes:
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
    replies = client.map([rationale_messages(r["question"], str(r["answer"]), _png(r))
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
    replies = client.map([describe_messages(_png(r)) for r in records], progress)
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
    from data.config import DataConfig
    from data.shapes import generate

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
