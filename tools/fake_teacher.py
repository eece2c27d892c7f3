"""A stand-in teacher for machines without a GPU: an OpenAI-compatible chat server whose
answers come from the built-in world's exact scorer, with a share of them wrong on purpose.

It knows the scenes of a shapes world (by the sha256 of each image's PNG bytes): the splits of
a config (`--config`), and the example datasets of data/examples.py (`--examples`), which carry
no facts in their files. It answers the three teacher prompts of data/prompts:
- claim checks (teacher_claim.txt): ' yes' / ' no' by `data.scoring.claim_holds`, with the
  first token's log-probabilities when asked (`logprobs`), at `--confidence`;
- reads (teacher_read.txt): the answer `data.scoring.implied_answer` finds, or 'unclear';
- descriptions (teacher_describe.txt): the scene's reference caption.
`--wrong` is the share of claim and read verdicts turned wrong (chosen by a hash of the
request, so a re-asked request gets the same answer). `--fail-first N` answers the first N
requests with HTTP 503 (a teacher that is starting), `--delay` slows every answer.

Written on the standard library (as tools/serve.py): the tests start it in a thread; a user
can start it to try the distillation path end to end:

    python -m tools.fake_teacher --config configs/builtin.yaml --port 8012 --wrong 0.1
    src run --config configs/builtin.yaml scorer.model=distill scorer.reader=distill \\
        teacher.endpoint=http://127.0.0.1:8012/v1 teacher.model=fake-teacher
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from data.scoring import claim_holds, implied_answer
from tools.json_http import JSONHandler

NAME = "fake-teacher"


def _first_line(template: str) -> str:
    return resources.files("data.prompts").joinpath(template).read_text("utf-8").strip().splitlines()[0]


def scene_index(records: Iterable[dict]) -> dict[str, dict]:
    """sha256 of each record's image bytes -> {facts, reference}."""
    out = {}
    for r in records:
        img = r["image"]["bytes"] if isinstance(r["image"], dict) else r["image"]
        out[hashlib.sha256(img).hexdigest()] = {"facts": r["facts"], "reference": r["reference"]}
    return out


def config_index(config: str, overrides: list[str] | None = None) -> dict[str, dict]:
    """The scenes of every split of a shapes config's world (as tasks/world.py generates them)."""
    from data.config import load_config
    from data.shapes import generate

    cfg = load_config(config, overrides or [])
    sizes = {"rationale": cfg.data.n_rationale, "pool": cfg.data.n_pool, "eval": cfg.data.n_eval,
             "scorer": cfg.scorer.n_train_items}
    return {k: v for s, n in sizes.items() for k, v in scene_index(generate(s, n, cfg.data, cfg.seed)).items()}


def examples_index(n_train: int, n_eval: int) -> dict[str, dict]:
    """The scenes of data/examples.py's datasets of these sizes (their files carry no facts)."""
    from data.examples import example_rows

    return {**scene_index(example_rows("train", n_train)), **scene_index(example_rows("validation", n_eval))}


class FakeTeacher:
    """The answers, apart from HTTP: `reply(request body) -> (status, JSON reply)`."""

    def __init__(self, index: dict[str, dict], wrong: float = 0.0, confidence: float = 0.9,
                 fail_first: int = 0, delay: float = 0.0):
        self.index, self.wrong, self.confidence = index, wrong, confidence
        self.fail_left, self.delay = fail_first, delay
        self.requests = 0
        self.lock = threading.Lock()
        self.kinds = {_first_line("teacher_claim.txt"): "claim", _first_line("teacher_read.txt"): "read",
                      _first_line("teacher_describe.txt"): "describe"}

    def _flip(self, body: dict) -> bool:
        h = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode() + b"/wrong").hexdigest()
        return int(h[:8], 16) / 16 ** 8 < self.wrong

    def reply(self, body: dict) -> tuple[int, dict]:
        with self.lock:
            self.requests += 1
            if self.fail_left > 0:
                self.fail_left -= 1
                return 503, {"error": {"message": "starting up"}}
        if self.delay:
            time.sleep(self.delay)
        text, png = "", None
        for m in body.get("messages", []):
            for b in ([{"type": "text", "text": m["content"]}] if isinstance(m.get("content"), str) else m.get("content", [])):
                if b.get("type") == "text":
                    text += b["text"]
                elif b.get("type") == "image_url":
                    png = base64.b64decode(b["image_url"]["url"].split(",", 1)[1])
        kind = next((k for head, k in self.kinds.items() if text.startswith(head)), None)
        scene = self.index.get(hashlib.sha256(png).hexdigest()) if png else None
        if kind is None or scene is None:
            return 400, {"error": {"message": "unknown prompt" if kind is None else "image not in the index"}}
        top = None
        if kind == "describe":
            answer = scene["reference"]
        elif kind == "claim":
            claim = text.split("Statement:", 1)[1].split("\n", 1)[0].strip()
            holds = claim_holds(claim, scene["facts"]) != self._flip(body)
            answer = "yes" if holds else "no"
            top = {answer: math.log(self.confidence), ("no" if holds else "yes"): math.log(1 - self.confidence)}
        else:
            rationale = text.split("Reasoning:", 1)[1].split("\nReply with", 1)[0].strip()
            said = implied_answer(rationale, scene["facts"])
            answer = said or "unclear"
            if self._flip(body):
                answer = "unclear" if said else "yes"
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": answer},
                                  "finish_reason": "stop"}
        if body.get("logprobs") and top:
            first = max(top, key=top.get)
            choice["logprobs"] = {"content": [{"token": first, "logprob": top[first],
                                               "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top.items()]}]}
        return 200, {"id": f"fake-{self.requests}", "object": "chat.completion", "model": body.get("model", NAME),
                     "choices": [choice]}


def make_handler(teacher: FakeTeacher) -> type[BaseHTTPRequestHandler]:
    class Handler(JSONHandler):
        def _send(self, status: int, obj: dict) -> None:
            self.send_json(status, obj)

        def do_GET(self) -> None:  # noqa: N802 - the http.server hook
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": NAME, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            except ValueError:
                self._send(400, {"error": {"message": "the body is not JSON"}})
                return
            self._send(*teacher.reply(body))

        def log_message(self, *args: Any) -> None:  # quiet: the tests and the pipeline log enough
            pass

    return Handler


def start_server(teacher: FakeTeacher, host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Serve in a daemon thread; returns the server and its endpoint (`http://host:port/v1`)."""
    server = ThreadingHTTPServer((host, port), make_handler(teacher))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}/v1"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append", default=[], help="a shapes config whose world to know (repeatable)")
    ap.add_argument("--examples", default="", metavar="N_TRAIN,N_EVAL",
                    help="also know data/examples.py's datasets of these sizes (e.g. 120,24)")
    ap.add_argument("--wrong", type=float, default=0.0, help="share of claim and read verdicts made wrong")
    ap.add_argument("--confidence", type=float, default=0.9, help="probability of the verdict it gives")
    ap.add_argument("--fail-first", type=int, default=0, help="answer the first N requests with HTTP 503")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8012)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="overrides of every --config, as `src run` takes them (seed=1: that seed's scenes)")
    args = ap.parse_args(argv)
    index: dict[str, dict] = {}
    for c in args.config:
        index.update(config_index(c, args.set))
    if args.examples:
        index.update(examples_index(*(int(x) for x in args.examples.split(","))))
    if not index:
        ap.error("give --config and/or --examples: the scenes the teacher knows")
    teacher = FakeTeacher(index, args.wrong, args.confidence, args.fail_first, args.delay)
    server, url = start_server(teacher, args.host, args.port)
    print(f"{NAME} at {url}: {len(index)} scenes, {args.wrong:.0%} wrong verdicts", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
