"""``python -m qrnn_lm serve``: a local web page to generate, score and inspect text.

    python -m qrnn_lm serve --checkpoint runs/ja [--checkpoint runs/ja2] [--port 8000]

One page (``qrnn_lm/static/serve.html``) and the JSON API behind it
(docs/SERVE.md): ``GET /api/models``, ``POST /api/score``, ``POST
/api/compare`` and ``POST /api/generate`` (server-sent events).  Needs the
optional extra ``pip install 'qrnn_lm[serve]'`` (fastapi, uvicorn).

The server has no authentication, so it listens on the loopback interface
only, unless ``--allow-remote`` is given.  Every request is bounded in size
(``--max-chars``) and in time (``--timeout``); every failure is one sentence
of JSON, ``{"error": "..."}``.
"""
import argparse
import codecs
import errno
import ipaddress
import json
import os
import socket
import sys
import time

from qrnn_lm.errors import QrnnLmError, run_command

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
INSTALL = ("the serve command needs fastapi and uvicorn, which are not installed; "
           "install them with `pip install 'qrnn_lm[serve]'` (or `pip install fastapi uvicorn`).")
MAX_GENERATE_TOKENS = 2000
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


class RequestError(QrnnLmError):
    """A bad request: its message goes back as ``{"error": ...}`` with ``status``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Limits:
    """Bounds of one request: characters of text, bytes of body, seconds of work."""

    def __init__(self, max_chars: int = 20000, timeout: float = 60.0):
        self.max_chars = max_chars
        self.max_bytes = 4 * max_chars + 65536   # UTF-8 Japanese: 3 bytes a character, + JSON
        self.timeout = timeout


# ---------------------------------------------------------------------------
# request parsing (no web framework needed: unit-testable)
# ---------------------------------------------------------------------------
def decode_upload(data: bytes) -> str:
    """The bytes of an uploaded file as text with the lines ``evaluate --file``
    reads (a byte-order mark honoured, line ends dropped); RequestError unless
    it is UTF-8 (or UTF-16/32 with a byte-order mark)."""
    encoding, skip = "utf-8", 0
    for bom, enc in _BOMS:
        if data.startswith(bom):
            encoding, skip = enc, (len(bom) if enc == "utf-8" else 0)
            break
    if b"\0" in data and encoding == "utf-8":
        raise RequestError("the uploaded file looks binary (it contains NUL bytes); upload a UTF-8 text file.")
    try:
        text = data[skip:].decode(encoding)
    except UnicodeDecodeError as e:
        raise RequestError(f"the uploaded file is not UTF-8 text (invalid bytes at offset {e.start}); "
                           "convert it to UTF-8 first.") from None
    text = text.lstrip("\ufeff")
    lines = text.split("\n")
    if lines and lines[-1] == "":  # a final line end does not start another line
        lines.pop()
    return "\n".join(line.rstrip("\r") for line in lines)


def parse_json(body: bytes) -> dict:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise RequestError("the request body is not valid UTF-8 JSON; send a JSON object "
                           "such as {\"text\": \"...\"}.") from None
    if not isinstance(data, dict):
        raise RequestError("the request body must be a JSON object such as {\"text\": \"...\"}.")
    return data


def field(data: dict, name: str, kind, default, lo=None, hi=None):
    """``data[name]`` checked to be a ``kind`` within [lo, hi]."""
    value = data.get(name, default)
    if value is None and default is None:
        return None
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok or (lo is not None and value < lo) or (hi is not None and value > hi):
        what = {int: "a whole number", float: "a number", str: "a string"}[kind]
        span = f" from {lo} to {hi}" if lo is not None and hi is not None else ""
        raise RequestError(f"{name!r} must be {what}{span}, got {json.dumps(value, ensure_ascii=False)[:40]}.")
    return value


def checked_text(text: str, limits: Limits) -> str:
    if not text.strip():
        raise RequestError("the text is empty; give at least one non-empty line.")
    if len(text) > limits.max_chars:
        raise RequestError(f"the text has {len(text)} characters, more than this server's limit of "
                           f"{limits.max_chars}; score a shorter piece (or restart with a larger --max-chars).",
                           413)
    return text


def sse(data: dict, event: str = "message") -> str:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


# ---------------------------------------------------------------------------
# the application
# ---------------------------------------------------------------------------
class ServeState:
    """The models and limits a server works with (one per app)."""

    def __init__(self, models: list, limits: Limits):
        self.models = models          # [(name, LanguageModel)]
        self.limits = limits

    def model(self, data: dict, key: str = "model"):
        i = field(data, key, int, 0)
        if not 0 <= i < len(self.models):
            raise RequestError(f"{key!r} is {i} but this server has {len(self.models)} model(s), numbered from 0.")
        return self.models[i][1]

    def deadline(self) -> float:
        return time.monotonic() + self.limits.timeout

    def info(self) -> dict:
        out = []
        for i, (name, lm) in enumerate(self.models):
            v = lm.vocab
            out.append({"index": i, "name": name, "outputs": len(v), "batching": lm.batching,
                        "tokenizer": v.tokenizer_config.get("type") or v.tokenizer_config.get("name"),
                        "rare": v.rare_mode, "buckets": int(v.bucket_mask.sum())})
        return {"models": out, "max_chars": self.limits.max_chars, "timeout_s": self.limits.timeout,
                "max_tokens": MAX_GENERATE_TOKENS}

    async def text_of(self, request) -> tuple:
        """(text, options) of a score/compare request: a JSON body, or the raw
        bytes of an uploaded file with the options in the query string."""
        body = await read_body(request, self.limits)
        if request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
            data = parse_json(body)
            text = field(data, "text", str, "")
        else:
            data = {k: _number(v) for k, v in request.query_params.items()}
            text = decode_upload(body)
        return checked_text(text, self.limits), data

    def generate_events(self, data: dict):
        """Check a generate request (RequestError), then return the iterator of its events."""
        lm = self.model(data)
        prompt = field(data, "prompt", str, "")
        if len(prompt) > self.limits.max_chars:
            raise RequestError(f"the prompt has {len(prompt)} characters, more than this server's limit of "
                               f"{self.limits.max_chars}; give a shorter prompt.", 413)
        opts = dict(max_tokens=field(data, "max_tokens", int, 100, 0, MAX_GENERATE_TOKENS),
                    temperature=field(data, "temperature", float, 1.0),
                    top_k=field(data, "top_k", int, 0, 0, 10 ** 9), top_p=field(data, "top_p", float, 1.0, 0, 1),
                    seed=field(data, "seed", int, None, 0, 2 ** 63 - 1))
        try:
            lm.check_sampling(opts["max_tokens"], opts["temperature"], opts["top_k"], opts["top_p"])
        except QrnnLmError as e:  # it names the command-line flags; name the JSON fields
            message = str(e)
            for flag in ("max-tokens", "temperature", "top-k", "top-p"):
                message = message.replace(f"--{flag} ", flag.replace("-", "_") + " ")
            raise RequestError(message) from None
        return _generate_events(lm, prompt, opts, self.deadline())


def _number(value: str):
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def _generate_events(lm, prompt: str, opts: dict, deadline: float):
    pieces, stopped = 0, "done"
    try:
        for piece in lm.generate_stream(prompt, **opts):
            pieces += 1
            yield sse({"text": piece})
            if time.monotonic() > deadline:
                stopped = "time limit"
                break
    except QrnnLmError as e:
        yield sse({"error": str(e)}, "error")
        return
    except (RuntimeError, MemoryError) as e:
        yield sse({"error": f"generation failed ({type(e).__name__}); try fewer tokens."}, "error")
        return
    yield sse({"pieces": pieces, "stopped": stopped}, "done")


async def read_body(request, limits: Limits) -> bytes:
    """The request body, refused once it passes ``limits.max_bytes``."""
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limits.max_bytes:
        raise RequestError(_too_large(int(size), limits), 413)
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limits.max_bytes:
            raise RequestError(_too_large(n, limits), 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(n: int, limits: Limits) -> str:
    return (f"the request body has {n} bytes or more, over this server's limit of {limits.max_bytes} bytes "
            f"(about {limits.max_chars} characters); send a shorter text.")


def create_app(models: list, limits=None):
    """The FastAPI app serving ``models`` ([(name, LanguageModel)], one or two)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from qrnn_lm.token_scores import compare_texts, inspect_text

    state = ServeState(models, limits or Limits())
    app = FastAPI(title="qrnn_lm serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state

    def error(message: str, status: int):
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(QrnnLmError)
    async def _user_error(request: Request, e: QrnnLmError):
        return error(str(e), getattr(e, "status", 400))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, e: HTTPException):
        what = {404: f"there is no page {request.url.path}; see docs/SERVE.md for the API.",
                405: f"{request.method} is not allowed on {request.url.path}; see docs/SERVE.md for the API."}
        return error(what.get(e.status_code, f"{e.detail}."), e.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        return error("the request is malformed; see docs/SERVE.md for the API.", 422)

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):  # never a traceback to the client
        return error(f"the server failed on this request ({type(e).__name__}); see the server's log.", 500)

    @app.get("/")
    async def page():
        return FileResponse(os.path.join(STATIC, "serve.html"), media_type="text/html")

    @app.get("/static/{name}")
    async def static(name: str):
        path = os.path.join(STATIC, os.path.basename(name))
        if name != os.path.basename(name) or not os.path.isfile(path):
            raise RequestError(f"there is no file /static/{name}.", 404)
        return FileResponse(path)

    @app.get("/api/models")
    async def api_models():
        return state.info()

    @app.post("/api/score")
    async def api_score(request: Request):
        text, data = await state.text_of(request)
        lm = state.model(data)
        top = field(data, "top", int, 5, 0, 50)
        return await run_in_threadpool(inspect_text, lm, text, top=top, deadline=state.deadline())

    @app.post("/api/compare")
    async def api_compare(request: Request):
        text, data = await state.text_of(request)
        if len(state.models) < 2:
            raise RequestError("comparing needs two models; start the server with two --checkpoint flags.")
        a, b = state.model(data, "a") if "a" in data else state.models[0][1], \
            state.model(data, "b") if "b" in data else state.models[1][1]
        top = field(data, "top", int, 5, 0, 50)
        return await run_in_threadpool(compare_texts, a, b, text, top=top, deadline=state.deadline())

    @app.post("/api/generate")
    async def api_generate(request: Request):
        data = parse_json(await read_body(request, state.limits))
        events = state.generate_events(data)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return app


# ---------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; QrnnLmError (one sentence) when the
    port is taken or the address is not this machine's."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise QrnnLmError(f"--host {host} is not an address of this machine; use 127.0.0.1.") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise QrnnLmError(f"port {port} on {host} is already in use; stop the program using it or "
                              "choose another with --port.") from None
        if e.errno == errno.EACCES:
            raise QrnnLmError(f"no permission to listen on port {port}; choose a port above 1023 with --port.") \
                from None
        raise QrnnLmError(f"cannot listen on {host}:{port} ({e.strerror or e}); check --host and --port.") \
            from None
    return sock


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qrnn_lm serve",
                                description="A local web page to generate, score and inspect text token by token "
                                            "(docs/SERVE.md).")
    p.add_argument("--checkpoint", action="append", required=True,
                   help="run directory (its best checkpoint) or checkpoint file; give it twice to compare two models")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other than loopback (the server has no authentication)")
    p.add_argument("--max-chars", type=int, default=20000, help="longest text or prompt a request may send")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds of work allowed per request")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    return p


def _names(paths: list) -> list:
    names = [os.path.basename(os.path.normpath(p)) or p for p in paths]
    return [n if names.count(n) == 1 else os.path.normpath(p) for n, p in zip(names, paths)]


def _serve(argv) -> int:
    args = _parser().parse_args(argv)
    if len(args.checkpoint) > 2:
        raise QrnnLmError("give at most two --checkpoint flags (one model, or two to compare).")
    if not is_loopback(args.host) and not args.allow_remote:
        raise QrnnLmError(f"refusing to listen on --host {args.host}: the server has no authentication, so anyone "
                          "who can reach it could run the model; use 127.0.0.1, or pass --allow-remote if you "
                          "accept that.")
    if not 0 <= args.port <= 65535:
        raise QrnnLmError(f"--port {args.port} is not a port number; give 0 to 65535.")
    if args.max_chars < 1 or not args.timeout > 0:
        raise QrnnLmError("--max-chars and --timeout must be positive.")
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise QrnnLmError(INSTALL) from None
    from qrnn_lm.lm import LanguageModel
    from qrnn_lm.cli import _device   # the --device rule of evaluate and generate
    device = _device(args.device)
    models = [(name, LanguageModel.from_checkpoint(path, device=device))
              for name, path in zip(_names(args.checkpoint), args.checkpoint)]
    sock = bind(args.host, args.port)
    app = create_app(models, Limits(args.max_chars, args.timeout))
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2, access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def main(argv=None) -> int:
    return run_command(_serve, list(sys.argv[1:] if argv is None else argv))
