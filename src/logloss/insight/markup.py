"""Small HTML pieces shared by the report page and the notebook displays (``_repr_html_``):
escaped tables, inline PNG images, and a probability bar.  Standard library only."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence


def escape(text: object) -> str:
    """``text`` safe inside HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], key: str = "") -> str:
    """A ``<table>``; header cells are escaped, body cells are HTML already (escape them first)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    identity = f' id="{escape(key)}"' if key else ""
    return f"<table{identity}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def png_image(data: bytes, key: str, alt: str, css_class: str = "") -> str:
    """An ``<img>`` holding PNG ``data`` in a ``data:`` URI (the page stays self-contained)."""
    encoded = base64.b64encode(data).decode("ascii")
    classes = f' class="{escape(css_class)}"' if css_class else ""
    return (
        f'<img{classes} id="figure-{escape(key)}" alt="{escape(alt)}" '
        f'src="data:image/png;base64,{encoded}">'
    )


def figure(data: bytes, key: str, alt: str) -> str:
    """A ``<figure>``: the PNG and its caption."""
    return f"<figure>{png_image(data, key, alt)}<figcaption>{escape(alt)}</figcaption></figure>"


def bar(fraction: float, width_em: float = 10.0, color: str = "#2a9d8f") -> str:
    """A horizontal bar ``fraction`` (0..1) of ``width_em`` wide, drawn with inline CSS."""
    share = min(max(float(fraction), 0.0), 1.0)
    return (
        f'<span style="display:inline-block;width:{width_em * share:.3f}em;height:.8em;'
        f'background:{color}" title="{share:.4f}"></span>'
    )
