// Tollgate dashboard. Plain JavaScript, no dependencies, no build step.
// Everything shown comes from Tollgate's JSON API, called with the session
// cookie; changes carry the session's CSRF token. Text from the server is
// only ever set with textContent (never parsed as HTML).
"use strict";
(function () {
  var session = null;      // GET /dashboard/session: {key, csrf_token, expires_at, currency, plans}
  var keysCache = null;    // admin: the key list, for names
  var modelsCache = null;  // the models the signed-in key may use
  var refreshTimer = null;
  var SVGNS = "http://www.w3.org/2000/svg";
  var $ = function (id) { return document.getElementById(id); };

  // ---------- DOM helpers ----------
  function el(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) {
      for (var k in attrs) {
        var v = attrs[k];
        if (v === undefined || v === null || v === false) continue;
        if (k === "text") e.textContent = v;
        else if (k === "class") e.className = v;
        else if (k.slice(0, 2) === "on") e.addEventListener(k.slice(2), v);
        else if (v === true) e.setAttribute(k, "");
        else e.setAttribute(k, v);
      }
    }
    for (var i = 2; i < arguments.length; i++) add(e, arguments[i]);
    return e;
  }
  function add(parent, child) {
    if (child === undefined || child === null || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { add(parent, c); }); return; }
    parent.appendChild(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs || {}) {
      if (k === "text") e.textContent = attrs[k]; else e.setAttribute(k, attrs[k]);
    }
    for (var i = 2; i < arguments.length; i++) if (arguments[i]) e.appendChild(arguments[i]);
    return e;
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }

  // ---------- Formatting (viewer's locale and time zone) ----------
  var numFmt = new Intl.NumberFormat();
  function num(n) { return numFmt.format(n || 0); }
  function compact(n) {
    try { return new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 }).format(n || 0); }
    catch (e) { return num(n); }
  }
  function money(micros) {
    var v = (micros || 0) / 1e6;
    var cur = session && session.currency;
    var digits = v !== 0 && Math.abs(v) < 0.01 ? 6 : 2;
    if (cur) {
      try {
        return new Intl.NumberFormat(undefined, { style: "currency", currency: cur, minimumFractionDigits: 2, maximumFractionDigits: digits }).format(v);
      } catch (e) { /* unknown code: plain below */ }
    }
    return new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: digits }).format(v) + (cur ? " " + cur : "");
  }
  function when(iso) {
    if (!iso) return "—";
    var d = new Date(iso);
    return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }
  function ago(iso) {
    if (!iso) return "never";
    var s = (Date.now() - new Date(iso).getTime()) / 1000;
    if (s < 60) return "just now";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return when(iso);
  }
  function tzName() {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "local time"; } catch (e) { return "local time"; }
  }
  function isoDay(d) { return d.toISOString().slice(0, 10); }
  function dayLabel(day) {
    var d = new Date(day + "T00:00:00Z");
    return d.toLocaleDateString(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
  }

  // ---------- API ----------
  function ApiError(status, code, message) { this.status = status; this.code = code; this.message = message; }
  function api(method, path, body) {
    // The CSRF header goes on every request: the server checks it on
    // changes, and its presence tells the server not to send a Basic
    // challenge that would pop up the browser's own password box.
    var headers = { "Accept": "application/json", "X-CSRF-Token": (session && session.csrf_token) || "-" };
    var opts = { method: method, headers: headers, credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) { headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
    return fetch(path, opts).then(function (r) {
      if (r.status === 204) return null;
      return r.text().then(function (t) {
        var data = null;
        try { data = t ? JSON.parse(t) : null; } catch (e) { data = null; }
        if (!r.ok) {
          var err = (data && data.error) || {};
          var e = new ApiError(r.status, err.code || "", err.message || ("HTTP " + r.status));
          if (r.status === 401 && path !== "/dashboard/signin") { signedOut(e.message); }
          throw e;
        }
        return data;
      });
    });
  }

  function toast(msg, bad) {
    var t = $("toast");
    t.textContent = msg;
    t.className = "toast" + (bad ? " bad" : "");
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(function () { t.hidden = true; }, 4000);
  }
  function copyButton(getText, label) {
    var b = el("button", { type: "button", class: "small", "aria-label": label || "Copy" }, "Copy");
    b.addEventListener("click", function () {
      var text = getText();
      var done = function () { b.textContent = "Copied"; setTimeout(function () { b.textContent = "Copy"; }, 1500); };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text); done(); });
      } else { fallbackCopy(text); done(); }
    });
    return b;
  }
  function fallbackCopy(text) {
    var ta = el("textarea", { readonly: true, class: "offscreen" });
    ta.value = text;
    document.body.appendChild(ta);
    ta.select();
    try { document.execCommand("copy"); } catch (e) { /* nothing more to try */ }
    document.body.removeChild(ta);
  }

  // ---------- Sign-in ----------
  function showSignIn(message) {
    stopRefresh();
    session = null; keysCache = null; modelsCache = null;
    $("top").hidden = true;
    $("view").hidden = true;
    $("signin").hidden = false;
    var e = $("signin-error");
    e.hidden = !message;
    e.textContent = message || "";
    $("signin-key").value = "";
    $("signin-key").focus();
  }
  function signedOut(message) {
    if (session) showSignIn(message);
  }
  $("signin-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var input = $("signin-key");
    var key = input.value.trim();
    input.value = ""; // the key leaves the page as soon as it is sent
    if (!key) return;
    var btn = $("signin-submit");
    btn.disabled = true;
    api("POST", "/dashboard/signin", { key: key }).then(function (s) {
      key = null;
      startSession(s);
    }, function (e) {
      key = null;
      $("signin-error").hidden = false;
      $("signin-error").textContent = e.message;
      input.focus();
    }).then(function () { btn.disabled = false; });
  });
  $("signout").addEventListener("click", function () {
    api("DELETE", "/dashboard/session").catch(function () {}).then(function () {
      session = null;
      location.hash = "";
      showSignIn("Signed out.");
    });
  });

  function isAdmin() { return session && session.key.scopes.indexOf("admin") >= 0; }

  function startSession(s) {
    session = s;
    $("signin").hidden = true;
    $("top").hidden = false;
    $("view").hidden = false;
    $("who").textContent = s.key.name + " · " + s.key.prefix + "…";
    buildNav();
    route();
  }

  // ---------- Navigation ----------
  var adminViews = [["keys", "Keys"], ["usage", "Usage"], ["audit", "Audit log"], ["backends", "Backends"], ["me", "My key"]];
  var holderViews = [["me", "My usage"]];
  function views() { return isAdmin() ? adminViews : holderViews; }
  function buildNav() {
    var nav = clear($("nav"));
    views().forEach(function (v) { nav.appendChild(el("a", { href: "#/" + v[0], "data-view": v[0] }, v[1])); });
  }
  function route() {
    if (!session) return;
    stopRefresh();
    var name = (location.hash || "").replace(/^#\/?/, "").split("?")[0];
    var names = views().map(function (v) { return v[0]; });
    if (names.indexOf(name) < 0) name = names[0];
    Array.prototype.forEach.call($("nav").children, function (a) {
      if (a.getAttribute("data-view") === name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    });
    var view = clear($("view"));
    drawnWidth = view.clientWidth;
    view.setAttribute("data-view", name);
    ({ keys: keysView, usage: usageView, audit: auditView, backends: backendsView, me: meView })[name](view);
  }
  window.addEventListener("hashchange", route);
  // Charts are drawn for the page's width: draw again when it changes a lot
  // (a phone turned, a window resized), not on every pixel.
  var drawnWidth = 0;
  window.addEventListener("resize", function () {
    clearTimeout(route.timer);
    route.timer = setTimeout(function () {
      var w = $("view").clientWidth;
      if (session && Math.abs(w - drawnWidth) > 120) { drawnWidth = w; route(); }
    }, 300);
  });
  function stopRefresh() { if (refreshTimer) { clearInterval(refreshTimer); refreshTimer = null; } }

  function header(title, subtitle, actions) {
    return el("div", { class: "head" }, el("div", null, el("h1", null, title), subtitle ? el("p", { class: "muted" }, subtitle) : null), actions || null);
  }
  function emptyState(title, hint) { return el("div", { class: "empty" }, el("strong", null, title), hint); }
  function failed(box, e) { clear(box).appendChild(el("p", { class: "error", role: "alert" }, e.message)); }
  function table(cols, rows) {
    var cls = function (c, cell) { return [c.num ? "num" : (cell && c.wrap ? "wrap" : ""), c.opt ? "opt" : ""].join(" ").trim() || null; };
    var thead = el("tr", null, cols.map(function (c) { return el("th", { class: cls(c, false), scope: "col" }, c.label); }));
    var tbody = el("tbody");
    rows.forEach(function (r) {
      tbody.appendChild(el("tr", null, cols.map(function (c) { return el("td", { class: cls(c, true) }, c.cell(r)); })));
    });
    return el("div", { class: "table-wrap" }, el("table", null, el("thead", null, thead), tbody));
  }

  // ---------- Dialog ----------
  function dialog(title, body, actions, onSubmit) {
    var d = $("dialog");
    $("dialog-title").textContent = title;
    add(clear($("dialog-body")), body);
    var err = $("dialog-error");
    err.hidden = true;
    var bar = clear($("dialog-actions"));
    actions.forEach(function (a) {
      var b = el("button", { type: a.submit ? "submit" : "button", class: a.class || null, value: a.submit ? "ok" : "cancel" }, a.label);
      if (!a.submit) b.addEventListener("click", function () { d.close(); });
      bar.appendChild(b);
    });
    var form = $("dialog-form");
    form.onsubmit = function (ev) {
      if (!onSubmit) return;
      ev.preventDefault();
      var btns = bar.querySelectorAll("button");
      btns.forEach(function (b) { b.disabled = true; });
      Promise.resolve().then(onSubmit).then(function (keepOpen) {
        if (!keepOpen) d.close();
      }, function (e) {
        err.hidden = false;
        err.textContent = e.message;
      }).then(function () { btns.forEach(function (b) { b.disabled = false; }); });
    };
    if (!d.open) d.showModal();
    var first = body && (body.querySelector ? body.querySelector("input, select, textarea") : null);
    (first || bar.lastChild).focus();
  }
  function showSecret(title, created, extra) {
    var body = el("div", null,
      el("p", { class: "notice" }, "Copy this key now. Tollgate keeps only its hash and cannot show it again."),
      el("div", { class: "secret" }, el("code", { id: "new-secret" }, created.key), copyButton(function () { return created.key; }, "Copy key")),
      created.webhook_secret ? el("div", null, el("p", { class: "muted fine" }, "Webhook signing secret (job callbacks), also shown once:"),
        el("div", { class: "secret" }, el("code", null, created.webhook_secret), copyButton(function () { return created.webhook_secret; }, "Copy webhook secret"))) : null,
      extra || null);
    dialog(title, body, [{ label: "I have stored it", class: "primary", submit: true }], null);
  }

  // ---------- Charts ----------
  // barChart draws one bar per point as inline SVG: y grid with round
  // ticks, a label under every nth bar, a tooltip (<title>) on each.
  // With series (names), each point's parts are stacked, one colour per
  // series, with a legend.
  function barChart(points, fmt, label, whole, series) {
    // Drawn at the width it will be shown at, so its text stays legible
    // from a phone to a laptop.
    var W = Math.max(300, Math.min(1000, ($("view").clientWidth || 760) - 48)), H = W < 500 ? 200 : 240, L = 48, R = 8, T = 12, B = 28;
    var maxV = Math.max.apply(null, points.map(function (p) { return p.value; }).concat([0]));
    var step = niceStep(maxV / 4 || 1);
    if (whole) step = Math.max(1, step); // no half requests on the axis
    var top = Math.max(step * 4, step * Math.ceil(maxV / step));
    var plotW = W - L - R, plotH = H - T - B;
    var s = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": label });
    s.appendChild(svg("title", { text: label }));
    for (var t = 0; t <= top + 1e-9; t += step) {
      var y = T + plotH - (t / top) * plotH;
      s.appendChild(svg("line", { x1: L, x2: W - R, y1: y, y2: y, class: "grid-line" }));
      s.appendChild(svg("text", { x: L - 8, y: y + 4, "text-anchor": "end", class: "axis", text: fmt(t, true) }));
    }
    var n = points.length || 1, slot = plotW / n, bw = Math.max(2, Math.min(36, slot * 0.7));
    var every = Math.ceil(n / Math.max(2, Math.floor(plotW / 64)));
    points.forEach(function (p, i) {
      var h = top ? (p.value / top) * plotH : 0;
      var x = L + i * slot + (slot - bw) / 2;
      if (series) {
        var base = T + plotH;
        p.parts.forEach(function (v, j) {
          if (!(v > 0)) return;
          var ph = (v / top) * plotH;
          base -= ph;
          var seg = svg("rect", { x: x, y: base, width: bw, height: Math.max(ph, 1), class: "seg c" + (j % 8), "data-series": series[j], "data-value": v });
          seg.appendChild(svg("title", { text: p.title + ", " + series[j] + ": " + fmt(v) }));
          s.appendChild(seg);
        });
      } else {
        var r = svg("rect", { x: x, y: T + plotH - h, width: bw, height: Math.max(h, p.value > 0 ? 1.5 : 0), rx: 2, class: "bar", "data-label": p.label, "data-value": p.value });
        r.appendChild(svg("title", { text: p.title + ": " + fmt(p.value) }));
        s.appendChild(r);
      }
      if (i % every === 0) s.appendChild(svg("text", { x: L + i * slot + slot / 2, y: H - 8, "text-anchor": "middle", class: "axis", text: p.label }));
    });
    var legend = series ? el("ul", { class: "legend" }, series.map(function (name, j) {
      return el("li", null, svg("svg", { viewBox: "0 0 10 10", width: "10", height: "10", "aria-hidden": "true" }, svg("rect", { width: 10, height: 10, rx: 2, class: "swatch c" + (j % 8) })), name);
    })) : null;
    return el("div", { class: "chart" }, s, legend);
  }
  function niceStep(raw) {
    var p = Math.pow(10, Math.floor(Math.log10(raw)));
    var f = raw / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
  }
  function hbars(rows, fmt, nameOf) {
    var maxV = Math.max.apply(null, rows.map(function (r) { return r.value; }).concat([0])) || 1;
    return el("div", { class: "hbars" }, rows.map(function (r) {
      var bar = svg("svg", { viewBox: "0 0 100 10", preserveAspectRatio: "none", "aria-hidden": "true" },
        svg("rect", { x: 0, y: 0, height: 10, rx: 0, width: Math.max(0.5, 100 * r.value / maxV) }));
      return el("div", { class: "hbar" }, el("span", { class: "name", title: nameOf(r.group) }, nameOf(r.group)), el("div", { class: "track" }, bar), el("span", { class: "v" }, fmt(r.value)));
    }));
  }
  var metrics = {
    requests: { label: "Requests", whole: true, get: function (g) { return g.requests; }, fmt: function (v, axis) { return axis ? compact(v) : num(v); } },
    tokens: { label: "Tokens", whole: true, get: function (g) { return g.total_tokens; }, fmt: function (v, axis) { return axis ? compact(v) : num(v); } },
    cost: { label: "Cost", get: function (g) { return g.cost_micros; }, fmt: function (v) { return money(v); } }
  };
  // daySeries fills the UTC days of [from, to) with the groups' values (0
  // where a day has no usage).
  function daySeries(groups, from, to, metric) {
    var by = {};
    (groups || []).forEach(function (g) { by[g.group] = g; });
    var out = [];
    for (var d = new Date(from + "T00:00:00Z"); isoDay(d) < to && out.length < 400; d.setUTCDate(d.getUTCDate() + 1)) {
      var day = isoDay(d), g = by[day];
      out.push({ label: dayLabel(day), title: dayLabel(day) + " (UTC)", value: g ? metric.get(g) : 0 });
    }
    return out;
  }

  // ---------- Ranges ----------
  function monthRange() {
    var n = new Date();
    var from = new Date(Date.UTC(n.getUTCFullYear(), n.getUTCMonth(), 1));
    var to = new Date(Date.UTC(n.getUTCFullYear(), n.getUTCMonth() + 1, 1));
    return { from: isoDay(from), to: isoDay(to) };
  }
  function lastDays(k) {
    var n = new Date();
    var to = new Date(Date.UTC(n.getUTCFullYear(), n.getUTCMonth(), n.getUTCDate() + 1));
    var from = new Date(to.getTime() - k * 86400000);
    return { from: isoDay(from), to: isoDay(to) };
  }
  function qs(o) {
    var parts = [];
    for (var k in o) if (o[k]) parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(o[k]));
    return parts.length ? "?" + parts.join("&") : "";
  }
  function loadKeys() {
    return api("GET", "/admin/keys").then(function (r) { keysCache = r.keys; return r.keys; });
  }
  function loadModels() {
    if (modelsCache) return Promise.resolve(modelsCache);
    return api("GET", "/models").then(function (r) { modelsCache = r.models; return r.models; });
  }
  function keyName(id) {
    var k = (keysCache || []).filter(function (k) { return k.id === id; })[0];
    return k ? k.name : id;
  }
  function keyStatus(k) {
    if (k.revoked_at) return ["revoked", "bad"];
    if (k.expires_at && new Date(k.expires_at) <= new Date()) return ["expired", "warn"];
    return ["active", "ok"];
  }

  // ---------- Keys (admin) ----------
  function keysView(view) {
    var search = el("input", { type: "search", placeholder: "Name, id or prefix", "aria-label": "Search keys", id: "key-search" });
    var plan = el("select", { "aria-label": "Plan", id: "key-plan" }, el("option", { value: "" }, "Any plan"));
    var status = el("select", { "aria-label": "Status", id: "key-status" },
      el("option", { value: "" }, "Any status"), el("option", { value: "active" }, "Active"),
      el("option", { value: "revoked" }, "Revoked"), el("option", { value: "expired" }, "Expired"));
    var newBtn = el("button", { type: "button", class: "primary", id: "new-key" }, "+ New key");
    view.appendChild(header("Keys", "Create, change, rotate and revoke API keys. Secrets are shown once, at creation or rotation.", newBtn));
    view.appendChild(el("div", { class: "toolbar" },
      el("label", { class: "grow" }, "Search", search), el("label", null, "Plan", plan), el("label", null, "Status", status)));
    var box = el("div", { id: "keys-table" }, el("p", { class: "muted" }, "Loading…"));
    view.appendChild(box);
    (session.plans || []).forEach(function (p) { plan.appendChild(el("option", { value: p }, p)); });
    plan.appendChild(el("option", { value: "-" }, "No plan"));

    function render() {
      var q = search.value.trim().toLowerCase(), p = plan.value, st = status.value;
      var rows = (keysCache || []).filter(function (k) {
        if (q && (k.name + " " + k.id + " " + k.prefix).toLowerCase().indexOf(q) < 0) return false;
        if (p === "-" ? !!k.plan : (p && k.plan !== p)) return false;
        if (st && keyStatus(k)[0] !== st) return false;
        return true;
      }).slice().reverse();
      clear(box);
      if (!keysCache.length) {
        box.appendChild(el("div", { class: "card" }, emptyState("No keys yet", el("p", null, "Create the first one with ", el("b", null, "+ New key"), ": give it a name and the scopes it needs."))));
        return;
      }
      if (!rows.length) {
        box.appendChild(el("div", { class: "card" }, emptyState("No key matches these filters", el("p", null, "Clear the search or pick another plan or status."))));
        return;
      }
      box.appendChild(table([
        { label: "Key", cell: function (k) { return el("div", null, el("div", null, el("b", null, k.name)), el("div", { class: "muted mono fine" }, k.prefix + "… · " + k.id)); } },
        { label: "Scopes", wrap: true, cell: function (k) { return k.scopes.map(function (s) { return el("span", { class: "chip" + (s === "admin" ? " admin" : "") }, s); }); } },
        { label: "Plan", cell: function (k) { return k.plan || el("span", { class: "muted" }, "—"); } },
        { label: "Models", wrap: true, cell: function (k) { return k.models && k.models.length ? k.models.join(", ") : el("span", { class: "muted" }, "all"); } },
        { label: "Status", cell: function (k) { var s = keyStatus(k); return el("span", { class: "badge " + s[1] }, s[0]); } },
        { label: "Last used", cell: function (k) { return ago(k.last_used_at); } },
        { label: "Expires", cell: function (k) { return k.expires_at ? when(k.expires_at) : el("span", { class: "muted" }, "never"); } },
        { label: "", num: true, cell: function (k) {
          var revoked = !!k.revoked_at;
          return el("div", { class: "actions" },
            el("button", { type: "button", class: "small", onclick: function () { editKey(k, render); }, disabled: revoked, "aria-label": "Edit " + k.name }, "Edit"),
            el("button", { type: "button", class: "small", onclick: function () { rotateKey(k, render); }, disabled: revoked, "aria-label": "Rotate " + k.name }, "Rotate"),
            el("button", { type: "button", class: "small danger", onclick: function () { revokeKey(k, render); }, disabled: revoked, "aria-label": "Revoke " + k.name }, "Revoke"));
        } }
      ], rows));
    }
    [search, plan, status].forEach(function (c) { c.addEventListener("input", render); });
    newBtn.addEventListener("click", function () { createKey(render); });
    loadKeys().then(render, function (e) { failed(box, e); });
  }

  function keyForm(k, models) {
    k = k || { scopes: ["generate"], models: [], limits: {} };
    var lim = k.limits || {};
    var f = {};
    f.name = el("input", { id: "f-name", value: k.name || "", required: true, maxlength: "100", placeholder: "acme-prod" });
    var scopes = el("div", { class: "checks" }, ["generate", "embed", "predict", "admin"].map(function (s) {
      return el("label", null, el("input", { type: "checkbox", name: "scope", value: s, checked: k.scopes.indexOf(s) >= 0 }), s);
    }));
    var modelChecks = el("div", { class: "checks" }, models.map(function (m) {
      return el("label", null, el("input", { type: "checkbox", name: "model", value: m.name, checked: (k.models || []).indexOf(m.name) >= 0 }), m.name);
    }));
    f.plan = el("select", { id: "f-plan" }, el("option", { value: "" }, "No plan (limits below only)"),
      (session.plans || []).map(function (p) { return el("option", { value: p, selected: k.plan === p }, p); }));
    function numInput(id, v, step) { return el("input", { id: id, type: "number", min: "0", step: step || "1", value: v ? String(v) : "", placeholder: "—" }); }
    f.rps = numInput("f-rps", lim.requests_per_second, "any");
    f.burst = numInput("f-burst", lim.burst);
    f.tpm = numInput("f-tpm", lim.tokens_per_minute);
    f.conc = numInput("f-conc", lim.max_concurrent);
    f.mtok = numInput("f-mtok", lim.monthly_tokens);
    f.mreq = numInput("f-mreq", lim.monthly_requests);
    f.expires = el("input", { id: "f-expires", type: "date", value: k.expires_at ? isoDay(new Date(k.expires_at)) : "" });
    var body = el("div", { class: "form-grid" },
      el("label", { class: "full" }, "Name", f.name),
      el("fieldset", { class: "full" }, el("legend", null, "Scopes"), scopes),
      el("fieldset", { class: "full" }, el("legend", null, "Models ", el("span", { class: "hint" }, "(none ticked: every model)")), models.length ? modelChecks : el("span", { class: "muted" }, "No models in the catalog.")),
      el("label", { class: "full" }, "Plan", f.plan),
      el("label", null, "Requests per second", f.rps), el("label", null, "Burst", f.burst),
      el("label", null, "Tokens per minute", f.tpm), el("label", null, "Concurrent requests", f.conc),
      el("label", null, "Monthly tokens", f.mtok), el("label", null, "Monthly requests", f.mreq),
      el("label", { class: "full" }, "Expires at the end of ", el("span", { class: "hint" }, "(empty: never; " + tzName() + ")"), f.expires),
      el("p", { class: "full hint muted fine" }, "Empty limits mean unlimited, or the plan's limit."));
    function read() {
      var n = function (i, float) { var v = i.value.trim(); return v === "" ? 0 : (float ? parseFloat(v) : parseInt(v, 10)); };
      var out = {
        name: f.name.value.trim(),
        scopes: Array.prototype.filter.call(scopes.querySelectorAll("input"), function (i) { return i.checked; }).map(function (i) { return i.value; }),
        models: Array.prototype.filter.call(modelChecks.querySelectorAll("input"), function (i) { return i.checked; }).map(function (i) { return i.value; }),
        plan: f.plan.value,
        limits: { requests_per_second: n(f.rps, true), burst: n(f.burst), tokens_per_minute: n(f.tpm), max_concurrent: n(f.conc), monthly_tokens: n(f.mtok), monthly_requests: n(f.mreq) }
      };
      for (var x in out.limits) if (!out.limits[x]) delete out.limits[x];
      if (f.expires.value) {
        var end = new Date(f.expires.value + "T00:00:00"); // local midnight after the chosen day
        end.setDate(end.getDate() + 1);
        out.expires_at = end.toISOString();
      }
      return out;
    }
    return { body: body, read: read };
  }
  function createKey(done) {
    loadModels().catch(function () { return []; }).then(function (models) {
      var form = keyForm(null, models);
      dialog("New key", form.body, [{ label: "Cancel" }, { label: "Create key", class: "primary", submit: true, id: "create" }], function () {
        var v = form.read();
        if (!v.scopes.length) throw new Error("Tick at least one scope.");
        return api("POST", "/admin/keys", v).then(function (created) {
          return loadKeys().then(function () { done(); showSecret("Key created: " + created.info.name, created); return true; });
        });
      });
    });
  }
  function editKey(k, done) {
    loadModels().catch(function () { return []; }).then(function (models) {
      var form = keyForm(k, models);
      dialog("Edit " + k.name, form.body, [{ label: "Cancel" }, { label: "Save", class: "primary", submit: true }], function () {
        var v = form.read();
        if (!v.scopes.length) throw new Error("Tick at least one scope.");
        var patch = { name: v.name, scopes: v.scopes, models: v.models, plan: v.plan, limits: v.limits };
        if (v.expires_at) patch.expires_at = v.expires_at;
        return api("PATCH", "/admin/keys/" + encodeURIComponent(k.id), patch).then(function () {
          return loadKeys().then(function () { done(); toast("Saved " + v.name + "."); });
        });
      });
    });
  }
  function graceSelect(id) {
    var opts = [["0s", "End the old secret now"], ["1h", "1 hour"], ["24h", "24 hours"], ["168h", "7 days"]];
    return el("select", { id: id }, opts.map(function (o) {
      return el("option", { value: o[0], selected: o[0] === "24h" }, o[1]);
    }));
  }
  function rotateKey(k, done) {
    var grace = graceSelect("f-grace");
    dialog("Rotate " + k.name, el("div", null,
      el("p", null, "A new secret is issued. How long may the current one keep working, so its users can switch?"),
      el("label", { class: "field" }, "Grace period", grace)), [{ label: "Cancel" }, { label: "Rotate", class: "primary", submit: true }], function () {
      return api("POST", "/admin/keys/" + encodeURIComponent(k.id) + "/rotate", { grace: grace.value }).then(function (r) {
        return loadKeys().then(function () { done(); showSecret("New secret for " + k.name, r); return true; });
      });
    });
  }
  function revokeKey(k, done) {
    dialog("Revoke " + k.name + "?", el("p", null, "Every request with this key, and every dashboard session signed in with it, fails from now on. This cannot be undone."),
      [{ label: "Cancel" }, { label: "Revoke key", class: "danger solid", submit: true }], function () {
        return api("POST", "/admin/keys/" + encodeURIComponent(k.id) + "/revoke").then(function () {
          return loadKeys().then(function () { done(); toast("Revoked " + k.name + "."); });
        });
      });
  }

  // ---------- Usage (admin) ----------
  function usageView(view) {
    var state = { range: "month", from: "", to: "", key: "", model: "", metric: "requests" };
    var rangeSel = el("select", { id: "u-range", "aria-label": "Range" },
      el("option", { value: "month" }, "This month"), el("option", { value: "7" }, "Last 7 days"),
      el("option", { value: "30" }, "Last 30 days"), el("option", { value: "90" }, "Last 90 days"), el("option", { value: "custom" }, "Custom…"));
    var from = el("input", { type: "date", id: "u-from", "aria-label": "From" }), to = el("input", { type: "date", id: "u-to", "aria-label": "To (inclusive)" });
    var custom = el("span", { class: "toolbar", hidden: true }, el("label", null, "From", from), el("label", null, "To", to));
    var keySel = el("select", { id: "u-key", "aria-label": "Key" }, el("option", { value: "" }, "All keys"));
    var modelSel = el("select", { id: "u-model", "aria-label": "Model" }, el("option", { value: "" }, "All models"));
    var seg = el("div", { class: "seg", role: "group", "aria-label": "Measure" });
    Object.keys(metrics).forEach(function (m) {
      seg.appendChild(el("button", { type: "button", "aria-pressed": String(m === state.metric), "data-metric": m, onclick: function () {
        state.metric = m;
        Array.prototype.forEach.call(seg.children, function (b) { b.setAttribute("aria-pressed", String(b.getAttribute("data-metric") === m)); });
        draw();
      } }, metrics[m].label));
    });
    var split = el("select", { id: "u-split", "aria-label": "Split the days by" },
      el("option", { value: "" }, "Nothing"), el("option", { value: "model" }, "Model"), el("option", { value: "key" }, "Key"));
    var csv = el("a", { class: "button", id: "u-csv", href: "#", download: "tollgate-usage-by-day.csv" }, "⇩ CSV by day");
    var csvAll = el("a", { class: "button", id: "u-csv-requests", href: "#", download: "tollgate-usage.csv" }, "⇩ CSV per request");
    view.appendChild(header("Usage", "Requests, tokens and cost per UTC day; times are shown in " + tzName() + ".", el("div", { class: "toolbar" }, csv, csvAll)));
    view.appendChild(el("div", { class: "toolbar" }, el("label", null, "Range", rangeSel), custom, el("label", null, "Key", keySel), el("label", null, "Model", modelSel), el("label", null, "Split days by", split), el("label", null, "Measure", seg)));
    var totals = el("div", { class: "grid", id: "u-totals" });
    var chartCard = el("div", { class: "card span-12", id: "u-chart" });
    var byModel = el("div", { class: "card span-6", id: "u-by-model" });
    var byKey = el("div", { class: "card span-6", id: "u-by-key" });
    var top = el("div", { class: "span-12", id: "u-top" });
    var recent = el("div", { class: "span-12", id: "u-recent" });
    view.appendChild(totals);
    view.appendChild(el("div", { class: "grid" }, chartCard, byModel, byKey, top, recent));
    totals.classList.add("section");

    var data = {};
    function range() {
      if (state.range === "month") return monthRange();
      if (state.range === "custom") {
        var r = { from: from.value, to: "" };
        if (to.value) { var t = new Date(to.value + "T00:00:00Z"); t.setUTCDate(t.getUTCDate() + 1); r.to = isoDay(t); }
        return r.from && r.to ? r : monthRange();
      }
      return lastDays(parseInt(state.range, 10));
    }
    function load() {
      var r = range();
      var base = { from: r.from, to: r.to, key_id: keySel.value, model: modelSel.value };
      csv.href = "/admin/usage" + qs(Object.assign({ group_by: "day", format: "csv" }, base));
      csvAll.href = "/admin/usage/export" + qs(Object.assign({ format: "csv" }, base));
      var m = monthRange();
      return Promise.all([
        api("GET", "/admin/usage" + qs(Object.assign({ group_by: "day" }, base))),
        api("GET", "/admin/usage" + qs(Object.assign({ group_by: "model" }, base))),
        api("GET", "/admin/usage" + qs(Object.assign({ group_by: "key" }, base))),
        api("GET", "/admin/usage" + qs({ group_by: "key", from: m.from, to: m.to })),
        api("GET", "/admin/usage/requests" + qs(Object.assign({ limit: "15" }, base)))
      ]).then(function (res) {
        data = { range: r, day: res[0], model: res[1], key: res[2], month: res[3], recent: res[4], split: null };
        // A split is one daily report per model or key (the busiest six;
        // the rest as "Other"), from the same route with ?model= or ?key_id=.
        var by = split.value;
        if (!by) return;
        var top = ((by === "model" ? data.model : data.key).groups || []).slice().sort(function (a, b) { return b.requests - a.requests; }).slice(0, 6);
        return Promise.all(top.map(function (g) {
          var q = Object.assign({ group_by: "day" }, base);
          q[by === "model" ? "model" : "key_id"] = g.group;
          return api("GET", "/admin/usage" + qs(q));
        })).then(function (reports) {
          data.split = { names: top.map(function (g) { return by === "model" ? g.group : keyName(g.group); }), reports: reports };
        });
      }).then(draw, function (e) { failed(chartCard, e); });
    }
    function draw() {
      var metric = metrics[state.metric];
      var t = data.day.totals;
      clear(totals);
      [["Requests", num(t.requests), ""], ["Tokens", num(t.total_tokens), num(t.prompt_tokens) + " in · " + num(t.completion_tokens) + " out"], ["Cost", money(t.cost_micros), session.currency || ""]].forEach(function (s) {
        totals.appendChild(el("div", { class: "card stat span-4" }, el("h3", null, s[0]), el("div", { class: "value" }, s[1]), el("div", { class: "sub" }, s[2])));
      });
      clear(chartCard).appendChild(el("h3", null, metric.label + " per day" + (data.split ? " by " + split.value : "")));
      if (!t.requests) {
        chartCard.appendChild(emptyState("No usage in this range", el("p", null, "Requests made with any key show up here once they are answered. Try a wider range, or send one: ", el("code", null, "curl -H 'X-API-Key: tg_…' -d '{\"model\":\"…\",\"prompt\":\"Hi\"}' " + location.origin + "/generate"))));
      } else if (data.split) {
        var total = daySeries(data.day.groups, data.range.from, data.range.to, metric);
        var parts = data.split.reports.map(function (rep) { return daySeries(rep.groups, data.range.from, data.range.to, metric); });
        var names = data.split.names.slice(), other = false;
        total.forEach(function (p, i) {
          p.parts = parts.map(function (ser) { return ser[i].value; });
          var rest = p.value - p.parts.reduce(function (a, b) { return a + b; }, 0);
          p.parts.push(rest > 0 ? rest : 0);
          other = other || rest > 0;
        });
        names.push("Other");
        if (!other) total.forEach(function (p) { p.parts.pop(); });
        chartCard.appendChild(barChart(total, metric.fmt, metric.label + " per day by " + split.value, metric.whole, other ? names : names.slice(0, -1)));
      } else {
        chartCard.appendChild(barChart(daySeries(data.day.groups, data.range.from, data.range.to, metric), metric.fmt, metric.label + " per day", metric.whole));
      }
      function breakdown(box, title, groups, nameOf) {
        clear(box).appendChild(el("h3", null, title));
        var rows = (groups || []).map(function (g) { return { group: g.group, value: metric.get(g) }; }).filter(function (r) { return r.value > 0; })
          .sort(function (a, b) { return b.value - a.value; }).slice(0, 10);
        box.appendChild(rows.length ? hbars(rows, function (v) { return metric.fmt(v); }, nameOf) : el("p", { class: "muted" }, "Nothing in this range."));
      }
      breakdown(byModel, metric.label + " by model", data.model.groups, function (g) { return g; });
      breakdown(byKey, metric.label + " by key", data.key.groups, keyName);
      clear(top).appendChild(el("h2", null, "Top keys this month"));
      var topRows = (data.month.groups || []).slice().sort(function (a, b) { return b.cost_micros - a.cost_micros || b.total_tokens - a.total_tokens; }).slice(0, 10);
      top.appendChild(topRows.length ? table([
        { label: "Key", cell: function (g) { return el("div", null, el("b", null, keyName(g.group)), el("div", { class: "muted mono fine" }, g.group)); } },
        { label: "Requests", num: true, cell: function (g) { return num(g.requests); } },
        { label: "Tokens", num: true, cell: function (g) { return num(g.total_tokens); } },
        { label: "Cost", num: true, cell: function (g) { return money(g.cost_micros); } }
      ], topRows) : el("div", { class: "card" }, emptyState("No usage this month yet", el("p", null, "Keys appear here by cost once they make requests."))));
      clear(recent).appendChild(el("h2", null, "Latest requests"));
      recent.appendChild(recentTable(data.recent.requests, true));
    }
    rangeSel.addEventListener("change", function () { state.range = rangeSel.value; custom.hidden = state.range !== "custom"; if (state.range !== "custom") load(); });
    [from, to, keySel, modelSel, split].forEach(function (c) { c.addEventListener("change", load); });
    Promise.all([loadKeys(), loadModels().catch(function () { return []; })]).then(function (res) {
      res[0].forEach(function (k) { keySel.appendChild(el("option", { value: k.id }, k.name + " (" + k.prefix + "…)")); });
      res[1].forEach(function (m) { modelSel.appendChild(el("option", { value: m.name }, m.name)); });
      return load();
    }, function (e) { failed(chartCard, e); });
  }

  function recentTable(rows, withKey) {
    if (!rows || !rows.length) return el("div", { class: "card" }, emptyState("No requests yet", el("p", null, "Requests appear here with their status and tokens as soon as they are answered.")));
    var cols = [
      { label: "Time", cell: function (r) { return when(r.time); } },
      { label: "Endpoint", opt: true, cell: function (r) { return r.endpoint + (r.surface && r.surface !== "native" ? " (" + r.surface + ")" : ""); } },
      { label: "Model", cell: function (r) { return r.model; } },
      { label: "Status", cell: function (r) { return el("span", { class: "badge " + (r.status < 400 ? "ok" : r.status < 500 ? "warn" : "bad") }, String(r.status)); } },
      { label: "Tokens in / out", num: true, cell: function (r) { return num(r.prompt_tokens) + " / " + num(r.completion_tokens); } },
      { label: "Cost", num: true, cell: function (r) { return money(r.cost_micros); } },
      { label: "Latency", num: true, opt: true, cell: function (r) { return num(Math.round(r.latency_ms)) + " ms"; } }
    ];
    if (withKey) cols.splice(1, 0, { label: "Key", cell: function (r) { return keyName(r.key_id); } });
    return table(cols, rows);
  }

  // ---------- Audit log (admin) ----------
  function auditView(view) {
    var keySel = el("select", { id: "a-key", "aria-label": "Key" }, el("option", { value: "" }, "All keys"));
    view.appendChild(header("Audit log", "Every change to a key, newest first; times in " + tzName() + "."));
    view.appendChild(el("div", { class: "toolbar" }, el("label", null, "Key", keySel)));
    var box = el("div", { id: "audit-table" }, el("p", { class: "muted" }, "Loading…"));
    view.appendChild(box);
    function load() {
      api("GET", "/admin/audit" + qs({ key_id: keySel.value })).then(function (r) {
        clear(box);
        var rows = r.entries.slice().sort(function (a, b) { return a.time < b.time ? 1 : -1; });
        if (!rows.length) { box.appendChild(el("div", { class: "card" }, emptyState("Nothing recorded yet", el("p", null, "Creating, changing, rotating or revoking a key is recorded here.")))); return; }
        box.appendChild(table([
          { label: "Time", cell: function (e) { return when(e.time); } },
          { label: "Action", cell: function (e) { return el("span", { class: "chip" }, e.action.replace("key.", "")); } },
          { label: "Key", cell: function (e) { return el("div", null, keyName(e.key_id), el("div", { class: "muted mono fine" }, e.key_id)); } },
          { label: "By", cell: function (e) { return e.actor === "cli" ? "command line" : keyName(e.actor); } },
          { label: "Detail", wrap: true, cell: function (e) { return el("span", { class: "mono fine" }, e.detail || ""); } }
        ], rows));
      }, function (e) { failed(box, e); });
    }
    keySel.addEventListener("change", load);
    loadKeys().then(function (keys) {
      keys.forEach(function (k) { keySel.appendChild(el("option", { value: k.id }, k.name)); });
      load();
    }, function (e) { failed(box, e); });
  }

  // ---------- Backends (admin) ----------
  function backendsView(view) {
    view.appendChild(header("Backends", "Ollama's health and the requests running now; refreshed every 5 s."));
    var load = el("div", { class: "card", id: "b-load" }), ready = el("div", { id: "b-ready" }), health = el("div", { id: "b-health" });
    view.appendChild(el("div", { class: "grid" }, el("div", { class: "span-12" }, load), el("div", { class: "span-12" }, ready), el("div", { class: "span-12" }, health)));
    function refresh() {
      api("GET", "/admin/inflight").then(function (r) {
        clear(load).appendChild(el("h3", null, "In flight"));
        load.appendChild(meter("Inference requests running", r.in_flight, r.max_in_flight, num(r.in_flight) + " of " + num(r.max_in_flight) + " GPU slots" +
          (r.queued ? " · " + num(r.queued) + " waiting" : "")));
      }, function (e) { failed(load, e); });
      fetch("/readyz", { cache: "no-store" }).then(function (r) { return r.json(); }).then(drawReady, function (e) { failed(ready, e); });
      // GET /admin/backends: each Ollama backend as routing sees it.
      api("GET", "/admin/backends").then(function (r) { drawBackends(r); }, function (e) {
        if (e.status !== 404 && e.status !== 405) { failed(health, e); }
      });
    }
    function drawReady(r) {
      var health = clear(ready);
      var cls = r.status === "ready" ? "ok" : r.status === "degraded" ? "warn" : "bad";
      var card = el("div", { class: "card" }, el("h3", null, "Readiness"),
        el("dl", { class: "kv" },
          el("dt", null, "Overall"), el("dd", null, el("span", { class: "badge " + cls, id: "b-status" }, r.status)),
          el("dt", null, "Database"), el("dd", null, r.database),
          el("dt", null, "Ollama"), el("dd", { id: "b-ollama" }, r.ollama)));
      health.appendChild(card);
      if (r.missing_models && r.missing_models.length) {
        health.appendChild(el("h2", { class: "section-title" }, "Models not installed"));
        health.appendChild(table([
          { label: "Model", cell: function (m) { return m.model; } },
          { label: "Ollama name", cell: function (m) { return el("code", null, m.ollama); } },
          { label: "Install with", cell: function (m) { return el("code", null, m.pull); } }
        ], r.missing_models));
      }
    }
    function drawBackends(r) {
      clear(health);
      var list = r.backends || [];
      if (!list.length) { health.appendChild(el("div", { class: "card" }, emptyState("No backends", el("p", null, "Add Ollama servers under backends: in models.yaml.")))); return; }
      health.appendChild(el("h2", { class: "section-title" }, "Ollama backends"));
      health.appendChild(table([
        { label: "Backend", cell: function (b) { return el("span", null, el("b", null, b.name), el("br"), el("code", { class: "muted" }, b.url)); } },
        { label: "State", cell: function (b) { return el("span", { class: "badge " + (b.state === "up" ? "ok" : "bad") }, b.state); } },
        { label: "Since", cell: function (b) { return when(b.since); } },
        { label: "Why", wrap: true, cell: function (b) { return b.why || "—"; } },
        { label: "Loaded models", wrap: true, cell: function (b) { return (b.loaded_models || []).map(function (m) { return m.name; }).join(", ") || "—"; } },
        { label: "In flight", num: true, cell: function (b) { return num(b.in_flight) + " / " + num(b.max_parallel); } },
        { label: "Queued", num: true, cell: function (b) { return num(b.queued); } },
        { label: "Requests", num: true, cell: function (b) { return num(b.requests); } },
        { label: "Failures", num: true, cell: function (b) { return num(b.failures) + (b.ejections ? " (" + num(b.ejections) + " ejections)" : ""); } }
      ], list));
    }
    refresh();
    refreshTimer = setInterval(refresh, 5000);
  }

  function meter(label, used, limit, text) {
    if (!limit) return el("div", { class: "meter" }, el("div", { class: "label" }, el("span", null, label), el("span", null, el("b", null, num(used)), el("span", { class: "muted" }, " · no monthly limit"))));
    var ratio = limit ? used / limit : 0;
    var p = el("progress", { max: String(limit || 1), value: String(Math.min(used, limit || 0)), "aria-label": label, class: ratio >= 1 ? "bad" : ratio >= 0.8 ? "warn" : null });
    return el("div", { class: "meter" }, el("div", { class: "label" }, el("span", null, label), el("span", { class: "muted" }, text)), p);
  }

  // ---------- My key (any key) ----------
  function meView(view) {
    var k = session.key;
    var rotateBtn = el("button", { type: "button", id: "rotate-self" }, "Rotate my key");
    view.appendChild(header(isAdmin() ? "My key" : "My usage", "This month's use of " + k.name + " (" + k.prefix + "…); times in " + tzName() + ".", rotateBtn));
    var quota = el("div", { class: "card span-8", id: "m-quota" }, el("p", { class: "muted" }, "Loading…"));
    var about = el("div", { class: "card span-4", id: "m-about" });
    var chart = el("div", { class: "card span-12", id: "m-chart" });
    var recent = el("div", { class: "span-12", id: "m-recent" });
    var snippets = el("div", { class: "card span-12", id: "m-snippets" });
    view.appendChild(el("div", { class: "grid" }, quota, about, chart, recent, snippets));

    about.appendChild(el("h3", null, "This key"));
    about.appendChild(el("dl", { class: "kv" },
      el("dt", null, "Name"), el("dd", null, k.name),
      el("dt", null, "Prefix"), el("dd", null, el("code", null, k.prefix + "…")),
      el("dt", null, "Scopes"), el("dd", null, k.scopes.map(function (s) { return el("span", { class: "chip" + (s === "admin" ? " admin" : "") }, s); })),
      el("dt", null, "Plan"), el("dd", null, k.plan || "—"),
      el("dt", null, "Expires"), el("dd", null, k.expires_at ? when(k.expires_at) : "never"),
      el("dt", null, "Session ends"), el("dd", null, session.expires_at ? when(session.expires_at) : "—")));

    var m = monthRange();
    Promise.all([api("GET", "/usage" + qs({ group_by: "day", from: m.from, to: m.to })), api("GET", "/usage/requests" + qs({ limit: "20" }))]).then(function (res) {
      var u = res[0], t = u.totals, q = u.quota || {};
      clear(quota).appendChild(el("h3", null, "This month"));
      quota.appendChild(q.monthly_requests ? meter("Requests", q.monthly_requests - (q.remaining_requests || 0), q.monthly_requests,
        num(q.monthly_requests - (q.remaining_requests || 0)) + " of " + num(q.monthly_requests)) : meter("Requests", t.requests, 0));
      quota.appendChild(q.monthly_tokens ? meter("Tokens", q.monthly_tokens - (q.remaining_tokens || 0), q.monthly_tokens,
        num(q.monthly_tokens - (q.remaining_tokens || 0)) + " of " + num(q.monthly_tokens)) : meter("Tokens", t.total_tokens, 0));
      quota.appendChild(el("div", { class: "meter" }, el("div", { class: "label" }, el("span", null, "Cost"), el("b", { id: "m-cost" }, money(t.cost_micros)))));
      if (q.resets_at) quota.appendChild(el("p", { class: "muted fine" }, "Quotas reset " + when(q.resets_at) + "."));
      clear(chart).appendChild(el("h3", null, "Requests per day"));
      chart.appendChild(t.requests ? barChart(daySeries(u.groups, m.from, m.to, metrics.requests), metrics.requests.fmt, "Requests per day", true)
        : emptyState("No requests this month", el("p", null, "Use the snippets below to make your first request; it shows here once answered.")));
      clear(recent).appendChild(el("h2", null, "Recent requests"));
      recent.appendChild(recentTable(res[1].requests, false));
    }, function (e) { failed(quota, e); });

    loadModels().then(function (models) { drawSnippets(snippets, models); }, function (e) { failed(snippets, e); });
    rotateBtn.addEventListener("click", function () {
      var grace = graceSelect("f-self-grace");
      dialog("Rotate my key", el("div", null,
        el("p", null, "A new secret replaces the current one. Until the grace period ends, the current secret (and this session) keep working; then sign in with the new one."),
        el("label", { class: "field" }, "Grace period", grace)), [{ label: "Cancel" }, { label: "Rotate", class: "primary", submit: true }], function () {
        return api("POST", "/keys/self/rotate", { grace: grace.value }).then(function (r) {
          showSecret("Your new key", r, el("p", { class: "muted fine" }, r.notice));
          return true;
        });
      });
    });
  }

  function drawSnippets(box, models) {
    clear(box).appendChild(el("h3", null, "Use this key"));
    if (!models.length) { box.appendChild(emptyState("This key may use no model", el("p", null, "Ask the operator to allow a model for it."))); return; }
    var sel = el("select", { id: "snip-model", "aria-label": "Model" }, models.map(function (m) { return el("option", { value: m.name }, m.name + " (" + m.endpoints.join(", ") + ")"); }));
    var out = el("div");
    box.appendChild(el("p", { class: "muted" }, "Put your key in the environment as ", el("code", null, "TOLLGATE_API_KEY"), " (this page never has it), then:"));
    box.appendChild(el("label", { class: "field" }, "Model", sel));
    box.appendChild(out);
    function draw() {
      var m = models.filter(function (x) { return x.name === sel.value; })[0];
      var base = location.origin, snips = [];
      var gen = m.endpoints.indexOf("generate") >= 0, emb = m.endpoints.indexOf("embed") >= 0;
      if (gen) {
        snips.push(["curl", "curl " + base + "/generate \\\n  -H \"X-API-Key: $TOLLGATE_API_KEY\" \\\n  -H 'Content-Type: application/json' \\\n  -d '{\"model\": \"" + m.name + "\", \"prompt\": \"Say hello\"}'"]);
        snips.push(["OpenAI SDK (Python)", "from openai import OpenAI\nimport os\n\nclient = OpenAI(base_url=\"" + base + "/v1\", api_key=os.environ[\"TOLLGATE_API_KEY\"])\nreply = client.chat.completions.create(\n    model=\"" + m.name + "\",\n    messages=[{\"role\": \"user\", \"content\": \"Say hello\"}],\n)\nprint(reply.choices[0].message.content)"]);
        snips.push(["Ollama client (Python)", "from ollama import Client\nimport os\n\nclient = Client(host=\"" + base + "\", headers={\"Authorization\": \"Bearer \" + os.environ[\"TOLLGATE_API_KEY\"]})\nreply = client.chat(model=\"" + m.name + "\", messages=[{\"role\": \"user\", \"content\": \"Say hello\"}])\nprint(reply.message.content)"]);
      }
      if (emb) {
        snips.push(["curl", "curl " + base + "/embed \\\n  -H \"X-API-Key: $TOLLGATE_API_KEY\" \\\n  -H 'Content-Type: application/json' \\\n  -d '{\"model\": \"" + m.name + "\", \"input\": [\"first text\", \"second text\"]}'"]);
        snips.push(["OpenAI SDK (Python)", "from openai import OpenAI\nimport os\n\nclient = OpenAI(base_url=\"" + base + "/v1\", api_key=os.environ[\"TOLLGATE_API_KEY\"])\nvectors = client.embeddings.create(model=\"" + m.name + "\", input=[\"first text\"], encoding_format=\"float\")\nprint(len(vectors.data[0].embedding))"]);
        snips.push(["Ollama client (Python)", "from ollama import Client\nimport os\n\nclient = Client(host=\"" + base + "\", headers={\"Authorization\": \"Bearer \" + os.environ[\"TOLLGATE_API_KEY\"]})\nprint(client.embed(model=\"" + m.name + "\", input=\"first text\").embeddings[0][:4])"]);
      }
      if (!gen && !emb && m.endpoints.indexOf("predict") >= 0) {
        snips.push(["curl", "curl " + base + "/predict \\\n  -H \"X-API-Key: $TOLLGATE_API_KEY\" \\\n  -H 'Content-Type: application/json' \\\n  -d '{\"model\": \"" + m.name + "\", \"labels\": [\"yes\", \"no\"], \"input\": \"Is the sky blue?\"}'"]);
      }
      clear(out);
      snips.forEach(function (s) {
        var code = s[1];
        out.appendChild(el("div", { class: "snip-head" }, el("b", null, s[0]), copyButton(function () { return code; }, "Copy " + s[0] + " snippet")));
        out.appendChild(el("pre", { class: "snippet" }, el("code", null, code)));
      });
    }
    sel.addEventListener("change", draw);
    draw();
  }

  // ---------- Start ----------
  // A session cookie from an earlier visit may still be good: ask.
  api("GET", "/dashboard/session").then(function (s) {
    if (!s.csrf_token) { showSignIn(); return; }
    startSession(s);
  }, function (e) { showSignIn(e.code && e.code !== "missing_api_key" ? e.message : ""); });
})();
