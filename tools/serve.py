"""A small OpenAI-compatible chat server for any LVLM that `models.loading.load_lvlm` loads.

Serves `POST /v1/chat/completions` (text and `image_url` content blocks, images inline as
`data:` URLs) and `GET /v1/models`, on 127.0.0.1 by default. It exists so that the teacher
client (models/teacher.py) can be exercised end to end against a real model on a machine
with no GPU and no hub; on a GPU machine, serve a real teacher with vLLM or TGI instead.
Written by hand on the standard library because vLLM needs a GPU and `transformers serve`
pulls extra dependencies for a job of one route. Requests are answered one at a time.

    python -m tools.serve --model models/builtin/base --port 8011
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch
from PIL import Image

from tools.json_http import JSONHandler


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def parse_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Image.Image]]:
    """OpenAI messages -> (HF chat messages with `{"type": "image"}` blocks, decoded images).

    Raises:
        ValueError: a message or block of an unknown form, or an image that is not a
            base64 `data:` URL of a readable image (the message says which).
    """
    out, images = [], []
    for m, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("system", "user", "assistant"):
            raise ValueError(f"messages[{m}]: needs a role of system, user or assistant")
        blocks = []
        for b, block in enumerate(_blocks(msg.get("content", ""))):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                blocks.append({"type": "text", "text": str(block.get("text", ""))})
            elif kind == "image_url":
                url = (block.get("image_url") or {}).get("url", "")
                if not url.startswith("data:") or ";base64," not in url:
                    raise ValueError(f"messages[{m}].content[{b}]: only base64 data: URLs are served")
                try:
                    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
                    images.append(img.convert("RGB"))
                except Exception as err:  # noqa: BLE001 - any decoding failure is the client's
                    raise ValueError(f"messages[{m}].content[{b}]: unreadable image ({err})") from None
                blocks.append({"type": "image"})
            else:
                raise ValueError(f"messages[{m}].content[{b}]: unknown block type {kind!r}")
        out.append({"role": msg["role"], "content": blocks})
    return out, images


class ChatModel:
    """One loaded LVLM answering chat requests (a lock serialises generation)."""

    def __init__(self, model: Any, processor: Any, name: str):
        self.model, self.processor, self.name = model, processor, name
        self.lock = threading.Lock()

    @torch.inference_mode()
    def complete(self, request: dict[str, Any]) -> str:
        messages, images = parse_messages(request.get("messages") or [])
        if not messages:
            raise ValueError("messages: at least one message is needed")
        tok = self.processor.tokenizer
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        batch = self.processor(images=images or None, text=[text], return_tensors="pt")
        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        temperature = float(request.get("temperature") or 0.0)
        kw = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with self.lock:
            gen = self.model.generate(**batch, max_new_tokens=int(request.get("max_tokens") or 128),
                                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **kw)
        return tok.decode(gen[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def make_handler(chat: ChatModel) -> type[BaseHTTPRequestHandler]:
    class Handler(JSONHandler):
        def _send(self, code: int, obj: dict[str, Any]) -> None:
            self.send_json(code, obj)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": chat.name, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                reply = chat.complete(request)
            except (ValueError, json.JSONDecodeError) as err:
                self._send(400, {"error": {"message": str(err)}})
                return
            self._send(200, {"id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion",
                             "created": int(time.time()), "model": chat.name,
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": reply}}]})

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler


def start_server(model: Any, processor: Any, name: str, host: str = "127.0.0.1",
                 port: int = 0) -> ThreadingHTTPServer:
    """Serve in a daemon thread; `server.server_address[1]` is the port (0 = any free one)."""
    server = ThreadingHTTPServer((host, port), make_handler(ChatModel(model, processor, name)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    from models.builtin import resolve_base
    from models.loading import load_lvlm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin", help="'builtin', a local folder or a hub id")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8011)
    args = ap.parse_args(argv)
    model, processor = load_lvlm(resolve_base(args.model))
    server = start_server(model, processor, args.model, args.host, args.port)
    print(f"serving {args.model} at http://{args.host}:{server.server_address[1]}/v1", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
