"""A local web app to draw a digit and watch the loss: the app behind ``logloss serve``.

The page (``logloss/serve/static/``) sends what the user draws to a small JSON API; the API runs the
checkpoint's model on the 28x28 image the model actually sees and answers the article's
breakdown: logits -> softmax probabilities -> predicted class, and for a chosen "true" class
``p_target`` and the loss ``-ln p_target`` (compared with ``ln C``, the loss of a uniform guess).

Endpoints (OpenAPI description at ``/openapi.json``):

- ``POST /api/predict``: JSON ``{"image": [[0-255] * 28] * 28, "target": int | null,
  "preprocess": false}`` (an MNIST-format image: light digit on a dark background), or a PNG
  body (``Content-Type: image/png``, target as ``?target=k``) which is always preprocessed the
  way MNIST was made (:func:`logloss.data.preprocess.to_mnist`).
- ``GET /api/sample/{split}/{index}``: the same breakdown for a dataset sample, its label as target.
- ``GET /api/samples?kind=random|hardest|confident_mistakes``: sample indices to browse.

Bad input (wrong size, not an image, NaN, gray levels outside 0-255, unknown split, index out of
range, a body over ``max_body_bytes``) gets a 4xx answer ``{"detail": "<what and how to fix>"}``.

The server (:mod:`logloss.serve.server`) binds 127.0.0.1 by default.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from logloss._version import __version__
from logloss.serve.images import (
    check_target,
    gray_image_from_json,
    image_from_png,
    mnist_like,
    parse_json_body,
)
from logloss.serve.predictor import MAX_SAMPLES, Predictor
from logloss.serve.schemas import (
    ERROR_RESPONSES,
    InputError,
    Prediction,
    PredictRequest,
    SampleList,
    SamplePrediction,
)
from logloss.training.checkpoint import load_checkpoint

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 1 << 20  # 1 MiB: a 280x280 canvas PNG is ~10 KiB, a JSON 28x28 image ~4 KiB
SAMPLE_KINDS = ("random", "hardest", "confident_mistakes")
# Only the page's own files: no CDN, no inline script, nothing from the network.
PAGE_CSP = "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'"


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
    _add_error_handlers(app)
    _add_predict_route(app, predictor)
    _add_browse_routes(app, predictor)
    _add_page(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error answers ``{"detail": "<one readable line>"}`` with its 4xx/5xx status."""

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


def _add_predict_route(app: FastAPI, predictor: Predictor) -> None:
    """``POST /api/predict``: a JSON or PNG image in, the article's breakdown out."""

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
        answer = await run_in_threadpool(predict_body, predictor, content_type, body, target)
        # Sent as built (response_model documents it): re-encoding 784 pixels through
        # FastAPI's generic encoder would cost more than the model's forward pass.
        return JSONResponse(answer)


def predict_body(
    predictor: Predictor, content_type: str, body: bytes, target: int | None
) -> dict[str, Any]:
    """The breakdown for a request body: a PNG (always preprocessed) or a JSON image."""
    if content_type == "image/png":
        image = mnist_like(image_from_png(body))
        chosen = target
    elif content_type in ("application/json", ""):
        fields = parse_json_body(body)
        image = gray_image_from_json(fields["image"], predictor.image_shape)
        if fields.get("preprocess", False) is True:
            image = mnist_like(image)
        elif fields.get("preprocess", False) is not False:
            raise InputError(f"preprocess = {fields['preprocess']!r}; use true or false")
        chosen = fields.get("target", target)
    else:
        raise InputError(
            f"Content-Type {content_type!r} is not supported; send application/json or image/png",
            415,
        )
    return predictor.breakdown(image, check_target(chosen, predictor.num_classes))


def _add_browse_routes(app: FastAPI, predictor: Predictor) -> None:
    """``GET /api/sample/{split}/{index}`` and ``GET /api/samples``: the dataset browser."""

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
        return sample_list(predictor, kind, split, count, seed)


def sample_list(
    predictor: Predictor, kind: str, split: str, count: int, seed: int | None
) -> dict[str, Any]:
    """``count`` samples of ``split``: random (seeded), or the top of a ranking of
    :mod:`logloss.insight.diagnostics` (highest loss, most confident mistakes)."""
    images, _ = predictor.split(split)
    evaluation = predictor.evaluation(split)
    if kind == "random":
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(images), size=min(count, len(images)), replace=False)
    else:
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


def _add_page(app: FastAPI) -> None:
    """``GET /``: the drawing page, and its static files."""

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
        )

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
