// The forkline console: fetches each page's server-rendered HTML from the
// keyed /api/console routes, keeps the key in sessionStorage, zooms charts by
// changing the URL, and runs the SQL page through POST /api/sql.
(function () {
  "use strict";
  var KEY = "forkline.key";
  var main = document.getElementById("main");
  var forget = document.getElementById("forget");

  // A key may come once in the fragment (never sent to the server); it moves to sessionStorage.
  if (location.hash.indexOf("#key=") === 0) {
    sessionStorage.setItem(KEY, decodeURIComponent(location.hash.slice(5)));
    history.replaceState(null, "", location.pathname + location.search);
  }

  function authHeaders(extra) {
    var h = extra || {};
    var key = sessionStorage.getItem(KEY);
    if (key) h.Authorization = "Bearer " + key;
    forget.hidden = !key;
    return h;
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function errorBox(status, text) {
    var message = text;
    try { var j = JSON.parse(text); message = j.message || j.error || text; } catch (e) { /* not JSON */ }
    var box = el("div", { "class": "error", "data-status": String(status) });
    box.textContent = status + ": " + message;
    return box;
  }

  function askKey(status, text) {
    main.replaceChildren();
    main.appendChild(el("h1", {}, "API key"));
    main.appendChild(errorBox(status, text));
    var form = el("form", { "class": "key" });
    var input = el("input", { type: "password", name: "key", placeholder: "fk_…", autocomplete: "off" });
    form.appendChild(input);
    form.appendChild(el("button", { type: "submit" }, "Use key"));
    form.appendChild(el("p", { "class": "note" }, "Kept in this tab's session storage only."));
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      sessionStorage.setItem(KEY, input.value.trim());
      load();
    });
    main.appendChild(form);
    input.focus();
  }

  forget.addEventListener("click", function () {
    sessionStorage.removeItem(KEY);
    load();
  });

  function navigate(url) {
    history.pushState(null, "", url);
    load();
  }

  // A run's deletion: the first click arms the button, the second sends it.
  document.addEventListener("click", function (ev) {
    var button = ev.target.closest && ev.target.closest("button.delete-run");
    if (!button) return;
    var section = button.closest("section.delete");
    if (!button.dataset.armed) {
      button.dataset.armed = "1";
      button.textContent = "Confirm: " + button.textContent;
      return;
    }
    var box = section.querySelector("input[name=cascade]");
    var url = "/api/runs/" + section.dataset.runId + "?cascade=" + (box && box.checked ? "true" : "false");
    button.disabled = true;
    fetch(url, { method: "DELETE", headers: authHeaders() }).then(function (r) {
      return r.text().then(function (text) {
        if (r.ok) return navigate("/p/" + encodeURIComponent(section.dataset.project));
        section.appendChild(errorBox(r.status, text));
        button.disabled = false;
      });
    });
  });

  document.addEventListener("click", function (ev) {
    var a = ev.target.closest && ev.target.closest("a[href]");
    if (!a || a.hasAttribute("download") || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
    var url = new URL(a.href, location.href);
    if (url.origin !== location.origin || url.pathname.indexOf("/api/") === 0) return;
    ev.preventDefault();
    navigate(url.pathname + url.search);
  });
  window.addEventListener("popstate", load);

  function load() {
    if (location.pathname === "/sql") return sqlPage();
    var started = performance.now();
    var params = new URLSearchParams(location.search);
    var api = "/api/console" + (location.pathname === "/" ? "/p" : location.pathname);
    var family = location.pathname.indexOf("/f/") > 0;
    if (family || /\/compare$/.test(location.pathname)) {
      // One downsampling bucket per pixel column of the charts (the family's tree takes a third).
      var w = Math.round(main.clientWidth * (family ? 0.68 : 0.98));
      params.set("width", String(Math.max(400, Math.min(4000, w))));
    }
    var query = params.toString();
    document.body.dataset.requested = api + (query ? "?" + query : "");
    return fetch(api + (query ? "?" + query : ""), { headers: authHeaders() }).then(function (r) {
      return r.text().then(function (text) {
        if (r.status === 401) return askKey(r.status, text);
        if (!r.ok) {
          main.replaceChildren(errorBox(r.status, text));
          return;
        }
        main.innerHTML = text;
        var h1 = main.querySelector("h1");
        document.title = (h1 ? h1.textContent + " · " : "") + "forkline";
        document.body.dataset.renderMs = (performance.now() - started).toFixed(1);
        document.body.dataset.bytes = String(text.length);
        timing(api);
        main.querySelectorAll("svg.chart").forEach(wireChart);
      });
    }).catch(function (e) {
      main.replaceChildren(errorBox("network", String(e)));
    });
  }

  // The browser's own timing of this page: bytes transferred so far (the
  // document, assets and fragments) and the fragment's fetch, for the tests.
  function timing(api) {
    var nav = performance.getEntriesByType("navigation")[0];
    var bytes = nav ? nav.transferSize : 0;
    var fetched = null;
    performance.getEntriesByType("resource").forEach(function (r) {
      bytes += r.transferSize;
      if (new URL(r.name).pathname === api) fetched = r;
    });
    document.body.dataset.transferBytes = String(bytes);
    if (fetched) document.body.dataset.fetchMs = fetched.duration.toFixed(1);
  }

  // Drag across a chart to zoom to the steps under the selection.
  function wireChart(svg) {
    var from = Number(svg.dataset.from), to = Number(svg.dataset.to);
    var left = Number(svg.dataset.left), plotWidth = Number(svg.dataset.plotWidth);
    var select = svg.querySelector("rect.select");
    var start = null;
    function x(ev) {
      var box = svg.getBoundingClientRect();
      var vx = (ev.clientX - box.left) * (svg.viewBox.baseVal.width / box.width);
      return Math.max(left, Math.min(left + plotWidth, vx));
    }
    function step(px) { return Math.round(from + (px - left) / plotWidth * (to - from)); }
    svg.addEventListener("mousedown", function (ev) { start = x(ev); });
    svg.addEventListener("mousemove", function (ev) {
      if (start === null) return;
      var now = x(ev);
      select.setAttribute("x", String(Math.min(start, now)));
      select.setAttribute("width", String(Math.abs(now - start)));
    });
    svg.addEventListener("mouseup", function (ev) {
      if (start === null) return;
      var a = step(Math.min(start, x(ev))), b = step(Math.max(start, x(ev)));
      start = null;
      select.setAttribute("width", "0");
      if (b - a < 2) return;
      var params = new URLSearchParams(location.search);
      params.delete("width");
      params.set("from", String(a));
      params.set("to", String(b));
      navigate(location.pathname + "?" + params.toString());
    });
  }

  // ------------------------------------------------------------ SQL page

  var PAGE_ROWS = 100;
  // Download formats: label, the Accept header of POST /api/sql, file extension.
  var FORMATS = [["Parquet", "application/vnd.apache.parquet", "parquet"], ["CSV", "text/csv", "csv"],
    ["Arrow", "application/vnd.apache.arrow.stream", "arrows"]];

  function sqlPage() {
    document.title = "SQL · forkline";
    main.replaceChildren();
    main.appendChild(el("h1", {}, "SQL"));
    var fns = el("p", { "class": "functions" }, "Lineage functions: ");
    ["lineage(run)", "stitched_metrics(run, metric)", "family_runs(run)", "family_metrics(run, metric)",
      "project_metrics(project, metric)", "downsample(step, value, n)", "lttb(step, value, n)"].forEach(function (f) {
      fns.appendChild(el("code", {}, f));
    });
    var tables = el("span", { "class": "tables" });
    fns.appendChild(tables);
    main.appendChild(fns);
    var params = new URLSearchParams(location.search);
    var area = el("textarea", { id: "sql", spellcheck: "false" });
    area.value = params.get("q") || "SELECT * FROM runs LIMIT 100";
    main.appendChild(area);
    var bar = el("div", { "class": "toolbar" });
    var run = el("button", { type: "button", id: "run" }, "Run (Ctrl+Enter)");
    var explain = el("button", { type: "button", id: "explain" }, "EXPLAIN");
    bar.appendChild(run);
    bar.appendChild(explain);
    FORMATS.forEach(function (f) {
      var b = el("button", { type: "button", "class": "download", "data-format": f[2] }, "⇩ " + f[0]);
      b.addEventListener("click", function () { download(area.value, f[1], f[2]); });
      bar.appendChild(b);
    });
    var stats = el("span", { "class": "stats", id: "stats" });
    bar.appendChild(stats);
    main.appendChild(bar);
    var out = el("div", { "class": "result", id: "result" });
    main.appendChild(out);
    fns.addEventListener("click", function (ev) {
      if (ev.target.tagName === "CODE") area.value += (area.value.endsWith(" ") ? "" : " ") + ev.target.textContent;
    });
    function go(sql) {
      var shown = new URLSearchParams({ q: area.value });
      history.replaceState(null, "", "/sql?" + shown.toString());
      query(sql, out, stats);
    }
    run.addEventListener("click", function () { go(area.value); });
    explain.addEventListener("click", function () { go("EXPLAIN " + area.value); });
    area.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); go(area.value); }
    });
    post("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema <> 'information_schema' ORDER BY 1, 2", "application/json")
      .then(function (r) { return r.ok ? r.json() : []; })
      .then(function (rows) {
        if (!rows.length) return;
        tables.appendChild(document.createTextNode(" Tables: "));
        rows.forEach(function (t) {
          tables.appendChild(el("code", {}, t.table_schema === "public" ? t.table_name : t.table_schema + "." + t.table_name));
        });
      }).catch(function () { /* the list is a convenience */ });
    if (params.get("q")) go(area.value);
    // A shared download link: `/sql?q=…&download=parquet` runs it once the page is open.
    var wanted = FORMATS.filter(function (f) { return f[2] === params.get("download"); })[0];
    if (wanted && params.get("q")) download(area.value, wanted[1], wanted[2]);
  }

  function post(sql, accept) {
    return fetch("/api/sql", {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json", Accept: accept }),
      body: JSON.stringify({ sql: sql })
    });
  }

  function query(sql, out, stats) {
    var started = performance.now();
    stats.textContent = "running…";
    out.replaceChildren();
    return post(sql, "application/json").then(function (r) {
      return r.text().then(function (text) {
        var ms = (performance.now() - started).toFixed(0);
        if (r.status === 401) return askKey(r.status, text);
        if (!r.ok) {
          stats.textContent = "failed in " + ms + " ms";
          out.appendChild(errorBox(r.status, text));
          return;
        }
        var rows = JSON.parse(text);
        stats.textContent = rows.length + " row" + (rows.length === 1 ? "" : "s") + " in " + ms + " ms";
        stats.dataset.rows = String(rows.length);
        stats.dataset.ms = ms;
        showRows(rows, out, 0);
      });
    }).catch(function (e) {
      stats.textContent = "";
      out.appendChild(errorBox("network", String(e)));
    });
  }

  function showRows(rows, out, page) {
    out.replaceChildren();
    if (!rows.length) { out.appendChild(el("p", { "class": "empty" }, "No rows.")); return; }
    var columns = [];
    rows.forEach(function (r) { Object.keys(r).forEach(function (k) { if (columns.indexOf(k) < 0) columns.push(k); }); });
    var pages = Math.ceil(rows.length / PAGE_ROWS);
    if (pages > 1) {
      var nav = el("div", { "class": "toolbar" });
      var prev = el("button", { type: "button" }, "◀");
      var next = el("button", { type: "button" }, "▶");
      prev.disabled = page === 0;
      next.disabled = page === pages - 1;
      prev.addEventListener("click", function () { showRows(rows, out, page - 1); });
      next.addEventListener("click", function () { showRows(rows, out, page + 1); });
      nav.appendChild(prev);
      nav.appendChild(el("span", {}, "page " + (page + 1) + " of " + pages));
      nav.appendChild(next);
      out.appendChild(nav);
    }
    var table = el("table", { "class": "grid rows" });
    var head = el("tr");
    columns.forEach(function (c) { head.appendChild(el("th", {}, c)); });
    table.appendChild(el("thead")).appendChild(head);
    var body = el("tbody");
    rows.slice(page * PAGE_ROWS, (page + 1) * PAGE_ROWS).forEach(function (r) {
      var tr = el("tr");
      columns.forEach(function (c) {
        var v = r[c];
        tr.appendChild(el("td", {}, v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v)));
      });
      body.appendChild(tr);
    });
    table.appendChild(body);
    out.appendChild(table);
  }

  // Downloads stream from POST /api/sql in the chosen format, saved as a file.
  function download(sql, accept, ext) {
    var stats = document.getElementById("stats");
    stats.textContent = "downloading…";
    post(sql, accept).then(function (r) {
      if (!r.ok) return r.text().then(function (t) { stats.textContent = ""; document.getElementById("result").replaceChildren(errorBox(r.status, t)); });
      return r.blob().then(function (blob) {
        var a = el("a", { href: URL.createObjectURL(blob), download: "result." + ext });
        document.body.appendChild(a);
        a.click();
        a.remove();
        stats.textContent = "downloaded " + blob.size + " bytes";
        stats.dataset.downloaded = String(blob.size);
      });
    });
  }

  load();
})();
