"""``logloss serve``: a local page to draw a digit and watch the loss."""

from __future__ import annotations

import argparse
import sys

from logloss.cli import CLIError, add_checkpoint_arguments
from logloss.cli.data import add_data_arguments
from logloss.data import DATASETS

# the page draws 28x28 digits: the datasets whose images are 28x28
BROWSABLE_DATASETS = tuple(name for name, info in DATASETS.items() if info.image_shape == (28, 28))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``logloss serve``."""
    parser = subparsers.add_parser(
        "serve",
        help="start a local web page: draw a digit, watch logits, softmax and the loss",
        description="Serve a page where you draw a digit (or browse test samples) and see the "
        "model's logits, softmax probabilities and -ln p(true class). Listens on "
        "127.0.0.1 (this machine only) unless --host says otherwise.",
    )
    add_checkpoint_arguments(parser)
    parser.add_argument(
        "--host",
        type=str,
        default="127.0.0.1",
        help="address to listen on (default: %(default)s; 0.0.0.0 exposes it to the network)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8000,
        help="TCP port, 0 for any free one (default: %(default)s)",
    )
    # --data-dir and --dataset like every command that reads a dataset, said as serve does it:
    # it never downloads, and browses only 28x28 datasets.  The dataset browsed defaults to the
    # one the checkpoint was trained on: the text is for --help, the value None (set below)
    # means "the checkpoint's" to create_app.
    add_data_arguments(
        parser,
        default_dataset="the checkpoint's own",
        datasets=BROWSABLE_DATASETS,
        downloads=False,
    )
    parser.set_defaults(dataset=None)
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=1 << 20,
        help="larger request bodies are refused with 413 (default: %(default)s)",
    )
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port {args.port} is not a TCP port; use 0-65535 (0 = any free port)")
    if args.max_body_bytes < 1024:
        raise CLIError(f"--max-body-bytes {args.max_body_bytes} is too small; use at least 1024")
    if not args.checkpoint.is_dir():
        raise CLIError(f"--checkpoint {args.checkpoint} is not a directory; train one first")

    from logloss.serve import ServeLimits, create_app, serve  # torch, FastAPI: after the checks

    app = create_app(
        args.checkpoint,
        which=args.which,
        data_dir=args.data_dir,
        dataset=args.dataset,
        host=args.host,
        limits=ServeLimits(max_body_bytes=args.max_body_bytes),
    )
    browse_problem = app.state.predictor.browse_problem()

    def announce(url: str) -> None:
        print(f"logloss serve: {url}/  (Ctrl+C to stop)", flush=True)
        if browse_problem is not None:
            print(f"logloss serve: {browse_problem}", flush=True)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(
                f"logloss serve: warning: listening on {args.host}, reachable from other machines",
                file=sys.stderr,
                flush=True,
            )

    serve(app, args.host, args.port, announce=announce)
    return 0
