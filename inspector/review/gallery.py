"""The review page of one night: a static, self-contained HTML file (no external assets).

Each sample is a card: the thumbnail (a base64 JPEG data URI) inside an SVG whose viewBox is the
source image size, so the model's boxes are drawn in source-pixel coordinates and scale with the
thumbnail; solid red for defects, dashed amber for uncertain detections. Below: sampling reasons,
verdict, part and frame ids, capture time and every detection's class and confidence.
"""

from __future__ import annotations

import base64
import html
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import cv2
import numpy as np

THUMB_WIDTH = 320

_CSS = """
body{font-family:system-ui,Segoe UI,Helvetica,Arial,sans-serif;margin:16px;background:#f4f5f7;color:#1d2330}
h1{font-size:20px;margin:0 0 4px} .sub{color:#556;margin:0 0 14px;font-size:13px}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border-radius:6px;box-shadow:0 1px 3px rgba(0,0,0,.15);width:320px;overflow:hidden}
.card svg{display:block;width:320px;height:auto;background:#222}
.meta{padding:6px 8px;font-size:12px;line-height:1.45}
.tag{display:inline-block;padding:0 6px;border-radius:8px;margin-right:4px;font-size:11px;color:#fff;background:#557}
.tag.uncertain{background:#c77700}.tag.reject{background:#b3261e}.tag.random_pass{background:#2e7d32}
.REJECT{color:#b3261e;font-weight:600}.PASS{color:#2e7d32;font-weight:600}.LATE{color:#8a5a00;font-weight:600}
.det{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11px}
.u{color:#a86400}.d{color:#b3261e}.none{color:#889}
"""


def make_thumbnail(jpeg: bytes, width: int = THUMB_WIDTH, quality: int = 70) -> bytes | None:
    """A small JPEG of the frame; None when the bytes do not decode."""
    arr = np.frombuffer(jpeg, np.uint8)
    # Decoding at half size is twice as fast and still wider than the thumbnail.
    img = cv2.imdecode(arr, cv2.IMREAD_REDUCED_COLOR_2)
    if img is None:
        return None
    h, w = img.shape[:2]
    if w > width:
        img = cv2.resize(img, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes() if ok else None


def _boxes(dets: Iterable[dict[str, Any]], color: str, dashed: bool, stroke: float, font: float,
           size: tuple[float, float]) -> str:
    out = []
    dash = f' stroke-dasharray="{stroke * 3:.1f} {stroke * 2:.1f}"' if dashed else ""
    for d in dets:
        # a classifier's finding has no box: it is about the whole image, framed as such
        x0, y0, x1, y1 = (float(v) for v in (d.get("box") or (stroke, stroke, size[0] - stroke, size[1] - stroke)))
        label = html.escape(f'{d["class"]} {float(d["confidence"]):.2f}')
        ty = y0 - stroke if y0 > font * 1.2 else y1 + font
        out.append(
            f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{max(x1 - x0, 1):.1f}" height="{max(y1 - y0, 1):.1f}" '
            f'fill="none" stroke="{color}" stroke-width="{stroke:.1f}"{dash}/>'
            f'<text x="{x0:.1f}" y="{ty:.1f}" fill="{color}" font-size="{font:.1f}" font-weight="bold" '
            f'paint-order="stroke" stroke="#000" stroke-width="{stroke / 2:.1f}">{label}</text>'
        )
    return "".join(out)


def _det_lines(dets: list[dict[str, Any]], cls: str, tag: str) -> str:
    return "".join(f'<div class="det {cls}">{tag} {html.escape(str(d["class"]))} {float(d["confidence"]):.3f}</div>'
                   for d in dets)


def _card(r: Mapping[str, Any], thumb: bytes | None) -> str:
    img = r.get("image", {})
    w, h = int(img.get("width", 640)), int(img.get("height", 480))
    stroke = max(w, h) / 220
    font = max(w, h) / 40
    if thumb:
        pic = (f'<image href="data:image/jpeg;base64,{base64.b64encode(thumb).decode()}" '
               f'x="0" y="0" width="{w}" height="{h}"/>')
    else:
        pic = (f'<text x="{w / 2}" y="{h / 2}" fill="#aaa" font-size="{font}" text-anchor="middle">'
               'image unavailable</text>')
    svg = (f'<svg viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg" role="img">{pic}'
           f'{_boxes(r.get("defects", []), "#ff3b30", False, stroke, font, (w, h))}'
           f'{_boxes(r.get("uncertain", []), "#ffb000", True, stroke, font, (w, h))}</svg>')
    reasons = "".join(f'<span class="tag {html.escape(x.split(":")[0])}">{html.escape(x)}</span>'
                      for x in r.get("reasons", [r.get("reason", "?")]))
    v = r.get("verdict", {})
    outcome = html.escape(str(v.get("outcome", "?")))
    dets = _det_lines(r.get("defects", []), "d", "defect") + _det_lines(r.get("uncertain", []), "u", "uncertain")
    model = r.get("model", {})
    return (
        f'<div class="card" id="{html.escape(str(r.get("id", "")))}">{svg}<div class="meta">'
        f'<div>{reasons} <span class="{outcome}">{outcome}</span></div>'
        f'<div>part {html.escape(str(r.get("part_id")))} · frame {html.escape(str(r.get("frame_id")))}</div>'
        f'<div>{html.escape(str(r.get("captured_at", "")))}</div>'
        f'{dets or "<div class=none>no detections</div>"}'
        f'<div class="none">{html.escape(str(model.get("name", "")))} {html.escape(str(model.get("version", "")))}'
        f' · {html.escape(str(r.get("id", "")))}</div></div></div>'
    )


def render_gallery(title: str, entries: list[Mapping[str, Any]], thumbnails: Mapping[str, bytes]) -> str:
    """`entries`: manifest lines (sidecar + keys); `thumbnails`: JPEG bytes by image sha256."""
    reasons = Counter(x for r in entries for x in r.get("reasons", [r.get("reason", "?")]))
    summary = ", ".join(f"{k} {n}" for k, n in sorted(reasons.items())) or "no samples"
    cards = "".join(_card(r, thumbnails.get(str(r.get("image_sha256", r.get("image", {}).get("sha256")))))
                    for r in entries)
    t = html.escape(title)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{t}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
        f'<body><h1>{t}</h1><p class="sub">{len(entries)} samples: {html.escape(summary)}. '
        f'Red: defects at or above threshold; dashed amber: uncertain.</p>'
        f'<div class="grid">{cards}</div></body></html>\n'
    )
