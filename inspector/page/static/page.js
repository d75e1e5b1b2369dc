// The line-side page: one EventSource on /events; every value from the service is written with
// textContent (never innerHTML): a part id, class name or alarm text is shown as text, whatever it holds.
"use strict";
(function () {
  const token = new URLSearchParams(location.search).get("token");
  const q = token ? "?token=" + encodeURIComponent(token) : "";
  const $ = (id) => document.getElementById(id);
  const rejects = [];  // newest first, at most 20
  const KEEP = 20;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function localTime(iso) { return iso ? new Date(iso).toLocaleTimeString() : "-"; }

  function showState(s) {
    if (!s) return;
    const st = $("station");
    st.className = "station " + (s.healthy ? "green" : "red");
    $("station-word").textContent = s.healthy ? "GREEN: inspecting" : "RED";
    const failed = $("failed");
    clear(failed);
    for (const f of s.failed) failed.appendChild(el("li", f.name + ": " + f.detail));
    $("realtime").textContent = s.realtime;
    const c = s.camera;
    $("camera").textContent = c.name + ": " + c.connection + (c.detail ? " (" + c.detail + ")" : "") +
      ", " + c.frames + " frames, " + c.reconnects + " reconnects";
    $("camera").className = (c.connection === "connected" || c.connection === "ended") ? "ok" : "bad";
    const b = s.broker;
    $("broker").textContent = b === null ? "MQTT off" :
      (b.connected ? "connected" : "DOWN" + (b.error ? ": " + b.error : "")) + ", outbox " + b.outbox +
      (b.degraded ? " (DEGRADED: not durable)" : "");
    $("broker").className = b === null ? "" : (b.connected ? "ok" : "bad");
    const p = s.plc;
    $("plc").textContent = p === null ? "no PLC handshake" : p.station + (p.reason ? " (" + p.reason + ")" : "") +
      (p.connected ? "" : ", no broker link");
    $("plc").className = p === null ? "" : (p.station === "ready" ? "ok" : "bad");
    const d = s.drift;
    if (d === null) { $("drift").textContent = "guard off"; $("drift").className = ""; }
    else if (!d.enabled) { $("drift").textContent = "not watched: " + (d.why_off || "-"); $("drift").className = ""; }
    else if (d.in_drift || d.acting) {
      $("drift").textContent = "OUTSIDE the envelope: " + d.statistic + " " + d.value + " outside " +
        JSON.stringify(d.bounds) + " (on_drift " + d.on_drift + (d.acting ? ", acting" : "") + ")";
      $("drift").className = "bad";
    } else {
      $("drift").textContent = "inside the envelope" + (d.statistic ? " (" + d.statistic + " " + d.value + ")" : "");
      $("drift").className = "ok";
    }
    showCounters(s);
    showTrend(s);
    showModel(s.model);
  }

  const COUNTERS = [["parts", "parts"], ["PASS", "PASS"], ["REJECT", "REJECT"], ["LATE", "LATE"],
                    ["escapes", "physical escapes"], ["false_rejects", "false rejects (ground truth)"]];
  function showCounters(s) {
    const body = $("counter-rows");
    clear(body);
    $("minute-head").textContent = "last " + Math.round(s.minute_window_s) + " s";
    for (const [key, label] of COUNTERS) {
      const tr = el("tr");
      tr.dataset.counter = key;
      tr.appendChild(el("th", label));
      const v = s.counters[key], m = s.per_minute[key];
      tr.appendChild(el("td", v === null ? "n/a" : v, "num" + ((key === "escapes" || key === "LATE") && v ? " bad" : "")));
      tr.appendChild(el("td", m === null ? "n/a" : m, "num"));
      body.appendChild(tr);
    }
  }

  function showTrend(s) {
    const svg = $("trend");
    clear(svg);
    const pts = s.trend.filter((p) => p[1] !== null);
    $("p99-now").textContent = (s.p99_ms === null ? "-" : s.p99_ms + " ms") + " (budget " + s.budget_ms + " ms)";
    const top = Math.max(s.budget_ms * 1.25, ...pts.map((p) => p[1]));
    const y = (v) => 80 - (v / top) * 78;
    const ns = "http://www.w3.org/2000/svg";
    const line = document.createElementNS(ns, "line");
    line.setAttribute("x1", "0"); line.setAttribute("x2", "300");
    line.setAttribute("y1", String(y(s.budget_ms))); line.setAttribute("y2", String(y(s.budget_ms)));
    line.setAttribute("class", "budget");
    svg.appendChild(line);
    if (pts.length > 1) {
      const t0 = pts[0][0], span = Math.max(1, pts[pts.length - 1][0] - t0);
      const poly = document.createElementNS(ns, "polyline");
      poly.setAttribute("points", pts.map((p) => ((p[0] - t0) / span * 300).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" "));
      poly.setAttribute("class", "p99");
      svg.appendChild(poly);
    }
  }

  function showModel(m) {
    $("model-name").textContent = m.name + " " + m.version + (m.precision ? " (" + m.precision + ", " + m.device + ")" : "");
    $("model-task").textContent = m.task;
    $("model-since").textContent = m.since ? localTime(m.since) + " (" + m.since + ")" : "-";
    $("model-shadow").textContent = m.shadow ? m.shadow.model + ": agreement " +
      (m.shadow.agreement === null ? "-" : (100 * m.shadow.agreement).toFixed(1) + " %") + " over " + m.shadow.judged + " parts"
      : "no shadow running";
    const w = m.last_switch;
    $("model-switch").textContent = w ? w.event + " by " + w.by + " at " + localTime(w.at) + " (" + w.why + "; was " + w.previous + ")" : "none since start";
  }

  function showFrame(f) {
    if (!f) return;
    $("frame").src = f.image;
    $("frame-meta").textContent = "part " + (f.part_id || "-") + ", frame " + f.frame_id + ", " + f.outcome + " at " + localTime(f.time);
  }

  const DELIVERY = {pending: ["waiting for its deadline", ""], in_time: ["acknowledged in time", "ok"],
                    plc: ["PLC result (handshake)", ""], no_link: ["no actuator link (MQTT off)", "warn"]};
  function deliveryText(d) {
    if (DELIVERY[d]) return DELIVERY[d];
    return ["NOT in time (" + d.slice(d.indexOf(":") + 1) + ")", "bad"];
  }

  function rejectRow(r) {
    const tr = el("tr");
    tr.dataset.frameId = String(r.frame_id);
    tr.className = "reject";
    const td = el("td");
    if (r.thumb) { const img = el("img"); img.src = r.thumb; img.alt = "frame " + r.frame_id; td.appendChild(img); }
    tr.appendChild(td);
    tr.appendChild(el("td", r.part_id === null ? "frame " + r.frame_id : r.part_id, "part"));
    tr.appendChild(el("td", localTime(r.time)));
    const why = r.reason + (r.defects.length ? ": " + r.defects.map((d) => d.class + " " + d.confidence).join(", ") : "") +
      (r.error ? " (" + r.error + ")" : "");
    tr.appendChild(el("td", why, "reason"));
    tr.appendChild(el("td", r.slack_ms + " ms", "num" + (r.slack_ms < 0 ? " bad" : "")));
    const [text, cls] = deliveryText(r.delivery);
    tr.appendChild(el("td", text, "delivery " + cls));
    return tr;
  }
  function showRejects() {
    const body = $("reject-rows");
    clear(body);
    for (const r of rejects) body.appendChild(rejectRow(r));
  }

  function showAlarms(list) {
    const body = $("alarm-rows");
    clear(body);
    for (const a of list) {
      const tr = el("tr");
      tr.dataset.kind = a.kind;
      tr.className = "alarm" + (a.acked_by ? " acked" : "");
      tr.appendChild(el("td", a.kind + (a.count > 1 ? " x" + a.count : ""), "bad"));
      tr.appendChild(el("td", localTime(a.since)));
      const text = el("td", a.text);
      text.title = a.meaning;
      tr.appendChild(text);
      const act = el("td");
      if (a.acked_by) act.appendChild(el("span", "acknowledged (" + a.acked_by + ")"));
      else {
        const btn = el("button", "acknowledge");
        btn.addEventListener("click", () => ack(a.kind, btn));
        act.appendChild(btn);
      }
      tr.appendChild(act);
      body.appendChild(tr);
    }
  }

  function ack(kind, btn) {
    btn.disabled = true;
    fetch("alarms/" + encodeURIComponent(kind) + "/ack" + q, {method: "POST", headers: {"X-Inspector-Page": "ack"}})
      .then((r) => { if (!r.ok) btn.disabled = false; })
      .catch(() => { btn.disabled = false; });
  }

  function connect() {
    const es = new EventSource("events" + q);
    const data = (ev) => JSON.parse(ev.data);
    es.addEventListener("hello", (ev) => {
      const h = data(ev);
      $("link").textContent = "live";
      $("link").className = "link";
      rejects.length = 0;
      for (const r of h.rejects) rejects.push(r);
      showRejects();
      showAlarms(h.alarms);
      showState(h.state);
      showFrame(h.frame);
    });
    es.addEventListener("state", (ev) => showState(data(ev)));
    es.addEventListener("frame", (ev) => showFrame(data(ev)));
    es.addEventListener("alarms", (ev) => showAlarms(data(ev)));
    es.addEventListener("reject", (ev) => {
      rejects.unshift(data(ev));
      if (rejects.length > KEEP) rejects.length = KEEP;
      showRejects();
    });
    es.addEventListener("delivery", (ev) => {
      const u = data(ev);
      const r = rejects.find((x) => x.frame_id === u.frame_id);
      if (r) { r.delivery = u.delivery; showRejects(); }
    });
    es.onerror = () => { $("link").textContent = "connection lost: retrying"; $("link").className = "link down"; };
  }
  connect();
})();
