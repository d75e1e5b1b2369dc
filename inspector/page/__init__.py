"""The operator's line-side page: served by the inspector itself (`page:` config section).

- `feed.py`: what the post thread and the alarm hub hand to the page (bounded, never blocking);
- `view.py`: the page's own worker thread (background group): reads the service report, encodes the
  live frame and reject thumbnails, keeps the open alarms, and pushes events;
- `broadcast.py`: per-browser bounded queues (drop oldest) that the event streams drain;
- `server.py`: the HTTP server (stdlib, bounded connections): `/`, static files, `/events` (server-sent
  events), `POST /alarms/<kind>/ack`; token rules for a non-loopback bind;
- `render.py`: boxes drawn on a scaled frame, JPEG as a data URL;
- `static/`: index.html, page.js, page.css (vanilla, no build step, no third-party code).
"""

from inspector.page.server import LinePage, check_bind, is_loopback

__all__ = ["LinePage", "check_bind", "is_loopback"]
