"""``logloss serve``: a local web app to draw a digit and watch the loss (see :mod:`.app`)."""

from logloss.serve.app import build_app, create_app
from logloss.serve.limits import ServeLimits
from logloss.serve.predictor import Predictor
from logloss.serve.schemas import InputError
from logloss.serve.server import bind_socket, running_server, serve, socket_url

__all__ = [
    "InputError",
    "Predictor",
    "ServeLimits",
    "bind_socket",
    "build_app",
    "create_app",
    "running_server",
    "serve",
    "socket_url",
]
