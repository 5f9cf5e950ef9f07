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
range, a body over ``max_body_bytes``) gets a 4xx answer ``{"detail": "<what and how to fix>"}``;
a server at one of its limits (:mod:`logloss.serve.limits`) answers 503 with Retry-After.

The server (:mod:`logloss.serve.server`) binds 127.0.0.1 by default; :mod:`logloss.serve.guards`
checks every request's Host and Content-Type first (docs/security.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from logloss._version import __version__
from logloss.serve.guards import BodyLimit, RequestGuard, allowed_hosts, error_response
from logloss.serve.images import (
    DecodeSlots,
    check_target,
    gray_image_from_json,
    image_from_png,
    mnist_like,
    parse_json_body,
    short_repr,
)
from logloss.serve.limits import ServeLimits
from logloss.serve.predictor import MAX_SAMPLES, Predictor
from logloss.serve.schemas import (
    ERROR_RESPONSES,
    InputError,
    PolicyJSONResponse,
    Prediction,
    PredictRequest,
    SampleList,
    SamplePrediction,
)
from logloss.training.checkpoint import load_checkpoint

STATIC_DIR = Path(__file__).resolve().parent / "static"
ERRORS_NAMED = 5  # validation errors one answer spells out (the others are counted)


def create_app(
    checkpoint_dir: str | Path,
    *,
    which: str = "best",
    data_dir: str | Path | None = None,
    dataset: str | None = None,
    host: str = "127.0.0.1",
    limits: ServeLimits | None = None,
) -> FastAPI:
    """Build the web app for one checkpoint.

    Args:
        checkpoint_dir: a directory written by ``logloss train``.
        which: "best", "last" or "initial" weights.
        data_dir: folder holding the dataset (for the sample browser); default: the project's
            usual place (``LOGLOSS_DATA``).
        dataset: dataset to browse; default: the one the checkpoint was trained on.
        host: the address the server will listen on: requests must name it (or a loopback
            name) in their Host header.
        limits: sizes, counts and times allowed (:class:`~logloss.serve.limits.ServeLimits`).

    Returns:
        A FastAPI app; run it with :func:`serve` or :func:`running_server`.

    Raises:
        ValueError: a checkpoint that cannot be loaded or whose model gives non-finite logits,
            a dataset that does not fit the page.
    """
    checkpoint = load_checkpoint(checkpoint_dir, which=which, device="cpu")
    dataset = dataset or getattr(checkpoint.config, "dataset", "mnist")
    predictor = Predictor(checkpoint, dataset=dataset, data_dir=data_dir)
    return build_app(predictor, host=host, limits=limits)


def build_app(
    predictor: Predictor, *, host: str = "127.0.0.1", limits: ServeLimits | None = None
) -> FastAPI:
    """The FastAPI app around a :class:`Predictor` (see :func:`create_app`)."""
    limits = limits or ServeLimits()
    # /docs and /redoc would load Swagger/ReDoc from a CDN: the description is /openapi.json.
    app = FastAPI(
        title="logloss",
        version=__version__,
        description="Draw a digit and watch the loss: logits, softmax, -ln p(true class).",
        docs_url=None,
        redoc_url=None,
        default_response_class=PolicyJSONResponse,
    )
    app.state.predictor = predictor
    app.state.limits = limits  # the server reads its connection limits here
    app.add_middleware(BodyLimit, limits=limits)
    app.add_middleware(RequestGuard, limits=limits, hosts=allowed_hosts(host))  # outermost
    _add_error_handlers(app, limits)
    _add_predict_route(app, predictor, limits)
    _add_browse_routes(app, predictor)
    _add_page(app)
    return app


def _add_error_handlers(app: FastAPI, limits: ServeLimits) -> None:
    """Every error answers ``{"detail": "<one readable line>"}`` with its 4xx/5xx status."""

    @app.exception_handler(InputError)
    async def input_error(request: Request, error: InputError) -> PolicyJSONResponse:
        return error_response(
            str(error), error.status_code, limits, retry_after_s=error.retry_after_s
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(
        request: Request, error: RequestValidationError
    ) -> PolicyJSONResponse:
        # FastAPI's default is a list of pydantic records; one readable line is clearer here.
        errors = error.errors()
        parts = []
        for item in errors[:ERRORS_NAMED]:
            where = ".".join(str(p) for p in item.get("loc", ()))
            parts.append(f"{where}: {item.get('msg')} (got {short_repr(item.get('input'))})")
        if len(errors) > ERRORS_NAMED:
            parts.append(f"and {len(errors) - ERRORS_NAMED} more")
        return error_response("; ".join(parts), 422, limits)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> PolicyJSONResponse:
        return error_response(str(error.detail), error.status_code, limits)


def _add_predict_route(app: FastAPI, predictor: Predictor, limits: ServeLimits) -> None:
    """``POST /api/predict``: a JSON or PNG image in, the article's breakdown out."""
    decode_slots = DecodeSlots(limits)

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
    ) -> PolicyJSONResponse:
        # RequestGuard let only application/json and image/png through; BodyLimit sized it.
        is_png = request.headers["content-type"].split(";")[0].strip().lower() == "image/png"
        body = await request.body()
        # Decoding and the forward pass are CPU work: keep them off the event loop.
        if is_png:
            async with decode_slots.hold():
                answer = await run_in_threadpool(predict_png, predictor, body, target, limits)
        else:
            answer = await run_in_threadpool(predict_json, predictor, body, target)
        # Sent as built (response_model documents it): re-encoding 784 pixels through
        # FastAPI's generic encoder would cost more than the model's forward pass.
        return PolicyJSONResponse(answer)


def predict_png(
    predictor: Predictor, body: bytes, target: int | None, limits: ServeLimits
) -> dict[str, Any]:
    """The breakdown for a PNG body, always preprocessed (``to_mnist``)."""
    chosen = check_target(target, predictor.num_classes)  # before the costly part
    return predictor.breakdown(mnist_like(image_from_png(body, limits)), chosen)


def predict_json(predictor: Predictor, body: bytes, target: int | None) -> dict[str, Any]:
    """The breakdown for a JSON body ``{"image", "target", "preprocess"}``; a ``target`` in
    the body wins over the query's."""
    fields = parse_json_body(body)
    image = gray_image_from_json(fields["image"], predictor.image_shape)
    if fields.get("preprocess", False) is True:
        image = mnist_like(image)
    elif fields.get("preprocess", False) is not False:
        raise InputError(f"preprocess = {short_repr(fields['preprocess'])}; use true or false")
    chosen = fields.get("target", target)
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
    """``GET /``: the drawing page, and its static files (RequestGuard adds the page's
    Content-Security-Policy to every answer)."""

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
