"""The JSON API's request and answer schemas (they make its OpenAPI description), and its error."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from logloss._json import dumps


class InputError(ValueError):
    """Input the API cannot use; the message says what was wrong and how to fix it.

    ``retry_after_s``, for a 503 that passes, becomes the answer's Retry-After header.
    """

    def __init__(
        self, message: str, status_code: int = 422, *, retry_after_s: int | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after_s = retry_after_s


class PolicyJSONResponse(JSONResponse):
    """A JSON answer under logloss's one policy (:mod:`logloss._json`): a non-finite number is
    the string "NaN", "Infinity" or "-Infinity", never a bare token and never a 500."""

    def render(self, content: Any) -> bytes:
        try:  # the usual case, all numbers finite: the standard encoder, 3-4x faster
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()
        except ValueError:  # NaN or infinity somewhere
            return dumps(content, indent=None).encode()


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
