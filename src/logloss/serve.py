"""A local web app to draw a digit and watch the loss: the app behind ``logloss serve``.

The page (``logloss/static/``) sends what the user draws to a small JSON API; the API runs the
checkpoint's model on the 28x28 image the model actually sees and answers the article's
breakdown: logits -> softmax probabilities -> predicted class, and for a chosen "true" class
``p_target`` and the loss ``-ln p_target`` (compared with ``ln C``, the loss of a uniform guess).

Endpoints (OpenAPI description at ``/openapi.json``):

- ``POST /api/predict``: JSON ``{"image": [[0-255] * 28] * 28, "target": int | null,
  "preprocess": false}`` (an MNIST-format image: light digit on a dark background), or a PNG
  body (``Content-Type: image/png``, target as ``?target=k``) which is always preprocessed the
  way MNIST was made (:func:`logloss.preprocess.to_mnist`).
- ``GET /api/sample/{split}/{index}``: the same breakdown for a dataset sample, its label as target.
- ``GET /api/samples?kind=random|hardest|confident_mistakes``: sample indices to browse.

Bad input (wrong size, not an image, NaN, gray levels outside 0-255, unknown split, index out of
range, a body over ``max_body_bytes``) gets a 4xx answer ``{"detail": "<what and how to fix>"}``.

The server binds 127.0.0.1 by default; :func:`serve` runs it in the foreground (the CLI) and
:func:`running_server` in a background thread (tests, benchmarks).
"""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from logloss.checkpoint import Checkpoint, load_checkpoint
from logloss.diagnostics import Evaluation, evaluate_logits
from logloss.explain import explain

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 1 << 20  # 1 MiB: a 280x280 canvas PNG is ~10 KiB, a JSON 28x28 image ~4 KiB
MAX_PNG_SIDE = 4096  # pixels; checked from the PNG header before decoding (decompression bombs)
SPLITS = ("train", "test")
MNIST_SHAPE = (28, 28)  # what logloss.preprocess.to_mnist makes and the page draws
# Fields of logloss.explain.Explanation passed on by the API (see ``Prediction``).
RESPONSE_FIELDS = (
    "probabilities",
    "losses",
    "predicted",
    "p_predicted",
    "target",
    "p_target",
    "loss",
    "uniform_loss",
    "entropy",
)
SAMPLE_KINDS = ("random", "hardest", "confident_mistakes")
MAX_SAMPLES = 200  # most samples one /api/samples answer lists (and rankings kept per split)
# Only the page's own files: no CDN, no inline script, nothing from the network.
PAGE_CSP = "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'"


class InputError(ValueError):
    """Input the API cannot use; the message says what was wrong and how to fix it."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code


# ---------------------------------------------------------------- schemas (OpenAPI)


class PredictRequest(BaseModel):
    """JSON body of ``POST /api/predict``."""

    model_config = {"extra": "forbid"}

    image: list[list[int]] = Field(
        description="28 rows of 28 gray levels, integers 0-255; MNIST format (light digit on a "
        "dark background) unless preprocess is true."
    )
    target: int | None = Field(None, description="The 'true' class: adds p_target and loss.")
    preprocess: bool = Field(
        False,
        description="Run MNIST preprocessing first (invert a light background, scale the "
        "bounding box to 20x20, centre by centre of mass).",
    )


class Prediction(BaseModel):
    """The breakdown of one prediction (shapes for a C-class model on 28x28 images)."""

    logits: list[float] = Field(description="The model's C raw outputs (float32).")
    probabilities: list[float] = Field(description="softmax(logits): C numbers summing to 1.")
    losses: list[float] = Field(description="-ln p_k for every class k (the loss if k were true).")
    predicted: int = Field(description="argmax of the probabilities.")
    p_predicted: float = Field(description="Probability of the predicted class.")
    target: int | None = Field(description="The 'true' class, if given.")
    p_target: float | None = Field(description="softmax(logits)[target].")
    loss: float | None = Field(description="Cross-entropy -ln p_target, in nats.")
    uniform_loss: float = Field(description="ln C: the loss of a uniform guess.")
    entropy: float = Field(description="Entropy of the predicted distribution, in nats.")
    input: list[list[int]] = Field(description="The 28x28 uint8 image the model saw.")


class SamplePrediction(Prediction):
    """A dataset sample's breakdown; its label is the target."""

    split: str
    index: int
    label: int


class SampleItem(BaseModel):
    index: int
    label: int
    predicted: int
    p_predicted: float
    loss: float = Field(description="-ln p(label)")
    input: list[list[int]]


class SampleList(BaseModel):
    split: str
    kind: str
    size: int = Field(description="Number of samples in the split.")
    items: list[SampleItem]


class ErrorMessage(BaseModel):
    detail: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorMessage} for code in (400, 404, 413, 415, 422, 503)
}


# ---------------------------------------------------------------- input validation


def _reject_constant(name: str) -> float:
    raise InputError(
        f"the JSON body contains {name}; gray levels must be finite integers 0-255",
    )


def parse_json_body(body: bytes) -> dict[str, Any]:
    """Decode a JSON object; NaN/Infinity and non-objects are input errors."""
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except InputError:
        raise
    except (ValueError, RecursionError) as error:  # bad syntax or UTF-8, 5000-digit ints, nesting
        raise InputError(f'the body is not valid JSON ({error}); send {{"image": ...}}') from None
    if not isinstance(value, dict):
        raise InputError(f"the JSON body must be an object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(PredictRequest.model_fields))
    if unknown:
        raise InputError(
            f"unknown field(s) {unknown}; allowed: {sorted(PredictRequest.model_fields)}"
        )
    if "image" not in value:
        raise InputError('the JSON body needs "image": 28 rows of 28 gray levels 0-255')
    return value


def _short(value: object, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters (a 400-digit integer stays readable).

    >>> _short(10**50, limit=12)
    '100000000...'
    """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def gray_image_from_json(value: Any, shape: tuple[int, int]) -> np.ndarray:
    """Validate nested lists of gray levels and return them as uint8 of ``shape``.

    Args:
        value: ``shape[0]`` lists of ``shape[1]`` integers in 0..255 (floats allowed only when
            integral, e.g. ``3.0``; booleans are not numbers here).
        shape: (rows, columns) expected.

    Returns:
        np.ndarray uint8 of ``shape``.

    >>> gray_image_from_json([[0, 255], [7.0, 1]], (2, 2)).tolist()
    [[0, 255], [7, 1]]
    """
    rows, columns = shape
    expected = f"{rows} rows of {columns} gray levels 0-255"
    if not isinstance(value, list) or len(value) != rows:
        got = f"{len(value)} rows" if isinstance(value, list) else type(value).__name__
        raise InputError(f"image must be {expected}; got {got}")
    out = np.empty(shape, dtype=np.uint8)
    for i, row in enumerate(value):
        if not isinstance(row, list) or len(row) != columns:
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise InputError(f"image row {i} must have {columns} gray levels; got {got}")
        for j, level in enumerate(row):
            if isinstance(level, bool) or not isinstance(level, (int, float)):
                raise InputError(
                    f"image[{i}][{j}] = {level!r} is not a number; gray levels are integers 0-255"
                )
            # Range first: math.isfinite(10**400) raises OverflowError (JSON ints are unbounded).
            in_range = 0 <= level <= 255
            if not in_range or (isinstance(level, float) and not level.is_integer()):
                raise InputError(
                    f"image[{i}][{j}] = {_short(level)} is not a gray level; use integers 0-255 "
                    "(0 = background, 255 = ink, as in MNIST)"
                )
            out[i, j] = int(level)
    return out


def image_from_png(body: bytes) -> np.ndarray:
    """Decode PNG bytes to an RGBA array (H, W, 4) uint8, for :func:`logloss.preprocess.to_mnist`.

    The size is checked from the header before decoding, so a small file that would inflate to
    gigabytes (a "decompression bomb") is refused without being decoded.
    """
    from PIL import Image, UnidentifiedImageError

    unreadable = (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    )
    message = "the body is not a readable PNG image; send a PNG file with Content-Type image/png"
    try:
        image = Image.open(io.BytesIO(body))  # reads the header only
    except unreadable:
        raise InputError(message, 415) from None
    with image:
        if image.format != "PNG":
            raise InputError(f"the body is a {image.format} image; send a PNG", 415)
        width, height = image.size
        if max(width, height) > MAX_PNG_SIDE:
            raise InputError(
                f"the PNG is {width}x{height} pixels; send one at most "
                f"{MAX_PNG_SIDE}x{MAX_PNG_SIDE}",
                413,
            )
        try:
            return np.asarray(image.convert("RGBA"), dtype=np.uint8)
        except unreadable:
            raise InputError(message, 415) from None


def mnist_like(image: np.ndarray) -> np.ndarray:
    """:func:`logloss.preprocess.to_mnist`, its ValueError (e.g. a blank image) an input error."""
    from logloss.preprocess import to_mnist

    try:
        return to_mnist(image)
    except ValueError as error:
        raise InputError(f"cannot preprocess the image: {error}") from None


def check_target(target: Any, num_classes: int) -> int | None:
    """``None`` or a class index in 0..num_classes-1 (booleans and floats are rejected)."""
    if target is None:
        return None
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < num_classes:
        raise InputError(
            f"target = {_short(target)} is not a class; "
            f"use an integer 0-{num_classes - 1} or omit it"
        )
    return target


# ---------------------------------------------------------------- the model side


class Predictor:
    """A checkpoint plus lazily loaded dataset splits and their cached per-sample results."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        dataset: str,
        data_dir: str | Path | None = None,
    ) -> None:
        shape = tuple(checkpoint.model.architecture.input_shape)
        if shape != MNIST_SHAPE:
            raise ValueError(
                f"the checkpoint's model reads {'x'.join(map(str, shape))} images; the page and "
                "the API draw and preprocess 28x28 digits: serve a model trained on a 28x28 "
                "dataset (mnist, fashion-mnist, kmnist)"
            )
        from logloss.data import get_dataset

        info = get_dataset(dataset)  # ValueError naming the known datasets
        if tuple(info.image_shape) != MNIST_SHAPE:
            raise ValueError(
                f"dataset {dataset!r} has {'x'.join(map(str, info.image_shape))} images; the "
                "sample browser shows the model's 28x28 inputs: choose a 28x28 dataset "
                "(mnist, fashion-mnist, kmnist) or leave --dataset out (the checkpoint's own)"
            )
        self.checkpoint = checkpoint
        self.dataset = dataset
        self.data_dir = data_dir
        self.image_shape = MNIST_SHAPE
        self._lock = threading.Lock()
        self._splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._evaluations: dict[str, Evaluation] = {}
        # One forward pass now: fails early on a broken checkpoint and tells us C.
        self.num_classes = int(self.logits(np.zeros((1, *MNIST_SHAPE), np.uint8)).shape[1])

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits (N, C) float32 for uint8 images (N, H, W)."""
        return np.asarray(self.checkpoint.logits(images), dtype=np.float32)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(images (N, H, W) uint8, labels (N,)) of a split, loaded once."""
        if name not in SPLITS:
            raise InputError(f"unknown split {_short(name)}; use one of {list(SPLITS)}", 404)
        with self._lock:
            if name not in self._splits:
                from logloss.data import load_dataset

                try:
                    images, labels = load_dataset(
                        self.dataset, name, data_dir=self.data_dir, download=False
                    )
                except (OSError, ValueError) as error:
                    raise InputError(
                        f"the {self.dataset} {name} split is not available on this server "
                        f"({error}); start `logloss serve` with --data-dir pointing to it",
                        503,
                    ) from None
                self._splits[name] = (np.asarray(images), np.asarray(labels))
            return self._splits[name]

    def evaluation(self, name: str) -> Evaluation:
        """The model's results on every sample of a split (:mod:`logloss.diagnostics`), once.

        Per sample i (arrays (N,)): ``losses[i] = -ln p_i(y_i)``, ``predicted[i]``,
        ``confidence[i] = p_i(predicted)``; ``hardest`` and ``confident_mistakes`` keep the top
        ``MAX_SAMPLES`` of each ranking.
        """
        images, labels = self.split(name)
        with self._lock:
            if name not in self._evaluations:
                try:
                    self._evaluations[name] = evaluate_logits(
                        self.logits(images), labels, top_k=MAX_SAMPLES
                    )
                except ValueError as error:  # e.g. labels beyond the model's classes
                    raise InputError(
                        f"the model cannot be evaluated on the {self.dataset} {name} split "
                        f"({error}); serve it with the dataset it was trained on",
                        503,
                    ) from None
            return self._evaluations[name]

    def breakdown(self, image: np.ndarray, target: int | None) -> dict[str, Any]:
        """The article's walkthrough for one uint8 image (H, W) as a JSON-ready dict."""
        logits = self.logits(image[None])[0]  # (C,) float32, as the model computed them
        result = explain(logits, target).to_dict()  # float64 from here on
        out = {key: result[key] for key in RESPONSE_FIELDS}
        out["logits"] = logits.tolist()
        out["input"] = image.tolist()
        return out


# ---------------------------------------------------------------- the app


class BodyLimitMiddleware:
    """Answer 413 to request bodies over ``max_bytes``, by Content-Length and by counting.

    The body is read here (at most ``max_bytes``) and replayed to the app, so a client that
    lies about Content-Length or streams chunks is cut off as soon as it passes the limit.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = JSONResponse(
            {"detail": f"request body over {self.max_bytes} bytes; send a smaller image"}, 413
        )
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await JSONResponse({"detail": "invalid Content-Length header"}, 400)(
                    scope, receive, send
                )
                return
            if int(length) > self.max_bytes:
                await too_big(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await too_big(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app(
    checkpoint_dir: str | Path,
    *,
    which: str = "best",
    data_dir: str | Path | None = None,
    dataset: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """Build the web app for one checkpoint.

    Args:
        checkpoint_dir: a directory written by ``logloss train``.
        which: "best", "last" or "initial" weights.
        data_dir: folder holding the dataset (for the sample browser); default: the project's
            usual place (``LOGLOSS_DATA``).
        dataset: dataset to browse; default: the one the checkpoint was trained on.
        max_body_bytes: larger request bodies get 413.

    Returns:
        A FastAPI app; run it with :func:`serve` or :func:`running_server`.
    """
    checkpoint = load_checkpoint(checkpoint_dir, which=which, device="cpu")
    dataset = dataset or getattr(checkpoint.config, "dataset", "mnist")
    predictor = Predictor(checkpoint, dataset=dataset, data_dir=data_dir)
    return build_app(predictor, max_body_bytes=max_body_bytes)


def build_app(predictor: Predictor, *, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app around a :class:`Predictor` (see :func:`create_app`)."""
    from logloss import __version__

    # /docs and /redoc would load Swagger/ReDoc from a CDN: the description is /openapi.json.
    app = FastAPI(
        title="logloss",
        version=__version__,
        description="Draw a digit and watch the loss: logits, softmax, -ln p(true class).",
        docs_url=None,
        redoc_url=None,
    )
    app.state.predictor = predictor
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)

    @app.exception_handler(InputError)
    async def input_error(request: Request, error: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's default is a list of pydantic records; one readable line is clearer here.
        parts = []
        for item in error.errors():
            where = ".".join(str(p) for p in item.get("loc", ()))
            parts.append(f"{where}: {item.get('msg')} (got {item.get('input')!r})")
        return JSONResponse({"detail": "; ".join(parts)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(error.detail)}, status_code=error.status_code)

    shape = predictor.image_shape

    @app.post(
        "/api/predict",
        response_model=Prediction,
        responses=ERROR_RESPONSES,
        summary="Predict a digit and explain the loss",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": PredictRequest.model_json_schema()},
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def predict(
        request: Request,
        target: int | None = Query(None, description="The 'true' class, for PNG bodies."),
    ) -> JSONResponse:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await request.body()  # already size-checked by BodyLimitMiddleware
        # Decoding and the forward pass are CPU work: keep them off the event loop.
        answer = await run_in_threadpool(predict_body, content_type, body, target)
        # Sent as built (response_model documents it): re-encoding 784 pixels through
        # FastAPI's generic encoder would cost more than the model's forward pass.
        return JSONResponse(answer)

    def predict_body(content_type: str, body: bytes, target: int | None) -> dict[str, Any]:
        if content_type == "image/png":
            image = mnist_like(image_from_png(body))
            chosen = target
        elif content_type in ("application/json", ""):
            fields = parse_json_body(body)
            image = gray_image_from_json(fields["image"], shape)
            if fields.get("preprocess", False) is True:
                image = mnist_like(image)
            elif fields.get("preprocess", False) is not False:
                raise InputError(f"preprocess = {fields['preprocess']!r}; use true or false")
            chosen = fields.get("target", target)
        else:
            raise InputError(
                f"Content-Type {content_type!r} is not supported; send application/json "
                "or image/png",
                415,
            )
        return predictor.breakdown(image, check_target(chosen, predictor.num_classes))

    @app.get(
        "/api/sample/{split}/{index}",
        response_model=SamplePrediction,
        responses=ERROR_RESPONSES,
        summary="The breakdown for a dataset sample (its label is the target)",
    )
    def sample(split: str, index: int) -> dict[str, Any]:
        images, labels = predictor.split(split)
        if not 0 <= index < len(images):
            raise InputError(
                f"index {index} is out of range: the {split} split has {len(images)} samples "
                f"(0-{len(images) - 1})",
                404,
            )
        label = int(labels[index])
        out = predictor.breakdown(np.asarray(images[index], dtype=np.uint8), label)
        return {**out, "split": split, "index": index, "label": label}

    @app.get(
        "/api/samples",
        response_model=SampleList,
        responses=ERROR_RESPONSES,
        summary="Sample indices to browse: random, hardest or most confident mistakes",
    )
    def samples(
        kind: Literal["random", "hardest", "confident_mistakes"] = Query(
            "random",
            description="random; hardest = highest loss; confident_mistakes = wrong "
            "predictions with the highest probability on the predicted class.",
        ),
        split: str = Query("test", description="train or test"),
        count: int = Query(24, ge=1, le=MAX_SAMPLES, description="How many samples."),
        seed: int | None = Query(None, ge=0, description="Seed for kind=random (an integer >= 0)."),
    ) -> dict[str, Any]:
        images, _ = predictor.split(split)
        evaluation = predictor.evaluation(split)
        if kind == "random":
            rng = np.random.default_rng(seed)
            chosen = rng.choice(len(images), size=min(count, len(images)), replace=False)
        else:  # the rankings of logloss.diagnostics: highest loss / most confident mistakes
            chosen = getattr(evaluation, kind).index[:count]
        items = [
            {
                "index": int(i),
                "label": int(evaluation.target[i]),
                "predicted": int(evaluation.predicted[i]),
                "p_predicted": float(evaluation.confidence[i]),
                "loss": float(evaluation.losses[i]),
                "input": np.asarray(images[i], dtype=np.uint8).tolist(),
            }
            for i in chosen
        ]
        return {"split": split, "kind": kind, "size": len(images), "items": items}

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
        )

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


# ---------------------------------------------------------------- running it


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port} ({error}); try another --port") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def socket_url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(app: FastAPI, log_level: str) -> uvicorn.Server:
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off")
    return uvicorn.Server(config)


def serve(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    announce: Callable[[str], object] = print,
    log_level: str = "warning",
) -> None:
    """Serve ``app`` in the foreground until interrupted; ``announce(url)`` once listening."""
    sock = bind_socket(host, port)
    announce(socket_url(sock))
    _server(app, log_level).run(sockets=[sock])


@contextmanager
def running_server(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning"
) -> Iterator[str]:
    """Run ``app`` in a background thread; yields its base URL, stops it on exit."""
    sock = bind_socket(host, port)
    server = _server(app, log_level)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(1000):  # up to 10 s for start-up
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.01)
        if not server.started:
            raise RuntimeError("the server did not start within 10 s")
        yield socket_url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
