/*
 * The per-cache dashboard: a client of the API v2 under
 * /api/v2/caches/<id>/, signed in by the session cookie; requests that
 * change something carry the session's CSRF token (X-CSRF-Token).
 * Figures refresh by polling (see LIVE_MS, HOUR_MS, GRAPH_MS); nothing is
 * computed here that the API computes.
 */
"use strict";

(function () {
  const main = document.getElementById("dashboard");
  const cacheId = main.dataset.cacheId;
  const csrf = main.dataset.csrf;
  const base = "/api/v2/caches/" + cacheId;

  /** Live figures (stats, introspection) every 5 s. */
  const LIVE_MS = 5000;
  /** The last hour's series (hit rate, new connections) every 15 s. */
  const HOUR_MS = 15000;
  /** The range graphs every 15 s on the 1 h range, every 60 s on longer ones. */
  const GRAPH_MS = 60000;
  /** Settings and credentials every 60 s (and after every change). */
  const INFO_MS = 60000;

  let stopped = false;
  let info = null;
  let range = 3600;
  const charts = {};

  const $ = (id) => document.getElementById(id);
  const statusLine = $("status");

  function say(text, isError) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", Boolean(isError));
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function sessionEnded() {
    if (stopped) return;  // several refused calls, one navigation
    stopped = true;
    window.location.assign("/signed-out");
  }

  /** Call the API; resolves with the parsed JSON (or null), rejects with ApiError. */
  async function api(method, path, body) {
    const headers = { "Accept": "application/json", "X-Requested-With": "memcachier-dashboard" };
    const init = { method: method, headers: headers, credentials: "same-origin", cache: "no-store" };
    if (method !== "GET") {
      headers["X-CSRF-Token"] = csrf;
    }
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(base + path, init);
    const text = await response.text();
    let value = null;
    if (text) {
      try { value = JSON.parse(text); } catch (e) { value = null; }
    }
    if (response.status === 401) {
      sessionEnded();
      throw new ApiError(401, "your session has ended");
    }
    if (!response.ok) {
      throw new ApiError(response.status, (value && value.error) || response.statusText);
    }
    return value;
  }

  function isoAgo(seconds) {
    return new Date(Date.now() - seconds * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
  }

  function series(path, names, seconds) {
    const query = new URLSearchParams({ startTime: isoAgo(seconds) });
    if (names) {
      query.set("names", names.join(","));
    }
    return api("GET", path + "?" + query.toString());
  }

  /** [{x: ms, y: value}] of column `name` of a series answer. */
  function points(answer, name) {
    const first = answer && answer[0];
    if (!first) {
      return [];
    }
    const column = first.columns.indexOf(name);
    return first.values.map((row) => ({ x: Date.parse(row[0]), y: row[column] }));
  }

  // -- formatting

  const number = new Intl.NumberFormat();

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  function percent(fraction) {
    return (fraction * 100).toFixed(1) + " %";
  }

  function clock(ms, withDate) {
    const d = new Date(ms);
    const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return withDate ? d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + hm : hm;
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) {
      td.className = className;
    }
    row.appendChild(td);
    return td;
  }

  /** Give each cell its column's name, for the stacked layout on phones. */
  function label(row) {
    const heads = row.closest("table").tHead.rows[0].cells;
    Array.from(row.cells).forEach((c, i) => {
      c.dataset.label = heads[i] ? heads[i].textContent : "";
    });
  }

  function button(text, onClick, className) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    b.className = "small" + (className ? " " + className : "");
    b.addEventListener("click", onClick);
    return b;
  }

  function fillList(list, items) {
    list.replaceChildren();
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = "none yet";
      list.appendChild(li);
      return;
    }
    for (const item of items) {
      const li = document.createElement("li");
      li.textContent = item.name + " (" + number.format(item.popularity) + ")";
      list.appendChild(li);
    }
  }

  // -- charts (Chart.js, vendored)

  const GREEN = "#1b7f3b", RED = "#b3261e", BLUE = "#1f5fbf", GREY = "#dde2ea", AMBER = "#9a6b00";

  function timeAxis(withDate) {
    return { type: "linear", ticks: { maxTicksLimit: 6, callback: (v) => clock(v, withDate) } };
  }

  /** Show the last `seconds` on a chart's time axis, with or without data. */
  function span(chart, seconds) {
    const now = Date.now();
    chart.options.scales.x.min = now - seconds * 1000;
    chart.options.scales.x.max = now;
  }

  function lineChart(id, datasets, yAxes, withDate) {
    const scales = Object.assign({ x: timeAxis(withDate) }, yAxes);
    return new Chart($(id), {
      type: "line",
      data: { datasets: datasets },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false, normalized: true,
        elements: {
          // points only while there are few, so that a lone sample shows
          point: { radius: (ctx) => (ctx.dataset.data.length < 30 ? 2 : 0) },
          line: { borderWidth: 2, tension: 0.2 },
        },
        interaction: { mode: "nearest", intersect: false },
        plugins: { legend: { display: datasets.length > 1, labels: { boxWidth: 12 } } },
        scales: scales,
      },
    });
  }

  function makeCharts() {
    const fraction = { min: 0, max: 1, ticks: { callback: (v) => Math.round(v * 100) + "%" } };
    charts.hit = lineChart("hit-chart", [{ label: "hit rate", data: [], borderColor: GREEN }],
      { y: fraction });
    charts.connections = lineChart("conn-chart",
      [{ label: "new connections/s", data: [], borderColor: BLUE }], { y: { min: 0 } });
    charts.storage = new Chart($("storage-chart"), {
      type: "doughnut",
      data: { labels: ["used", "free"], datasets: [{ data: [0, 1], backgroundColor: [BLUE, GREY] }] },
      options: { animation: false, responsive: true, maintainAspectRatio: false, cutout: "65%",
        plugins: { legend: { position: "right", labels: { boxWidth: 12 } } } },
    });
    charts.alltime = new Chart($("alltime-chart"), {
      type: "bar",
      data: {
        labels: ["get", "delete", "incr", "decr", "cas", "touch"],
        datasets: [
          { label: "hits", data: [], backgroundColor: GREEN },
          { label: "misses", data: [], backgroundColor: RED },
        ],
      },
      options: { animation: false, responsive: true, maintainAspectRatio: false,
        scales: { y: { beginAtZero: true } }, plugins: { legend: { labels: { boxWidth: 12 } } } },
    });
    charts.memory = lineChart("memory-chart", [
      { label: "memory used", data: [], borderColor: BLUE, yAxisID: "y" },
      { label: "hit rate", data: [], borderColor: GREEN, yAxisID: "rate" },
    ], {
      y: { min: 0, ticks: { callback: (v) => bytes(v) } },
      rate: Object.assign({ position: "right", grid: { drawOnChartArea: false } }, fraction),
    }, true);
    charts.latency = lineChart("latency-chart", [], {
      y: { min: 0, ticks: { callback: (v) => (v / 1e6).toFixed(2) + " ms" } },
    }, true);
  }

  // -- cards

  function hitLevel(rate) {
    return rate >= 0.8 ? "good" : rate >= 0.5 ? "fair" : "bad";
  }

  async function refreshHour() {
    const answer = await series("/insight/processed_stats", ["hit_rate", "connection_rate"], 3600);
    const hits = points(answer, "hit_rate");
    charts.hit.data.datasets[0].data = hits;
    span(charts.hit, 3600);
    charts.hit.update();
    const big = $("hit-rate");
    if (hits.length) {
      const latest = hits[hits.length - 1].y;
      big.textContent = percent(latest);
      big.dataset.level = hitLevel(latest);
    } else {
      big.textContent = "no data yet";
      big.dataset.level = "";
    }
    charts.connections.data.datasets[0].data = points(answer, "connection_rate");
    span(charts.connections, 3600);
    charts.connections.update();
  }

  const COMMANDS = ["get", "delete", "incr", "decr", "cas", "touch"];

  async function refreshStats() {
    const stats = await api("GET", "/stats");
    $("conn-open").textContent = number.format(stats.curr_connections);
    if (info) {
      const limit = info.connection_limit;
      $("conn-limit").textContent = number.format(limit);
      $("conn-warning").hidden = stats.curr_connections < 0.8 * limit;
    }
    const used = stats.bytes, limitBytes = stats.limit_maxbytes;
    charts.storage.data.datasets[0].data = [used, Math.max(limitBytes - used, 0)];
    charts.storage.update();
    $("storage-used").textContent =
      bytes(used) + " of " + bytes(limitBytes) + " (" + percent(limitBytes ? used / limitBytes : 0) + ")";
    $("storage-items").textContent = number.format(stats.curr_items);
    $("storage-evictions").textContent = number.format(stats.evictions);

    const hits = COMMANDS.map((c) => stats[c + "_hits"]);
    const misses = COMMANDS.map((c) => stats[c + "_misses"]);
    charts.alltime.data.datasets[0].data = hits;
    charts.alltime.data.datasets[1].data = misses;
    charts.alltime.update();
    const body = $("alltime-table").tBodies[0];
    body.replaceChildren();
    COMMANDS.forEach((c, i) => {
      const row = body.insertRow();
      cell(row, c);
      cell(row, number.format(hits[i]), "num");
      cell(row, number.format(misses[i]), "num");
    });
    $("alltime-set").textContent = number.format(stats.cmd_set);
    $("alltime-flush").textContent = number.format(stats.cmd_flush);
    $("alltime-held-back").textContent = number.format(stats.held_back_seconds || 0) + " s";
  }

  async function refreshGraphs() {
    const [memory, latency] = await Promise.all([
      series("/insight/processed_stats", ["bytes", "hit_rate"], range),
      series("/insight/latency", null, range),
    ]);
    charts.memory.data.datasets[0].data = points(memory, "bytes");
    charts.memory.data.datasets[1].data = points(memory, "hit_rate");
    span(charts.memory, range);
    charts.memory.update();
    const colours = [BLUE, AMBER, GREEN, RED];
    charts.latency.data.datasets = latency.map((s, i) => ({
      label: (s.tags && s.tags.server) || "server",
      data: s.values.map((row) => ({ x: Date.parse(row[0]), y: row[1] })),
      borderColor: colours[i % colours.length],
    }));
    charts.latency.options.plugins.legend.display = latency.length > 0;
    span(charts.latency, range);
    charts.latency.update();
  }

  async function refreshIntrospection() {
    const [popular, logs, prefixes] = await Promise.all([
      api("GET", "/introspection/popular_items"),
      api("GET", "/introspection/recent_logs"),
      api("GET", "/introspection/prefixes"),
    ]);
    fillList($("most-hit"), popular.most_hit_keys);
    fillList($("most-missed"), popular.most_missed_keys);
    fillList($("most-mutated"), popular.most_mutated_keys);
    fillList($("popular-prefixes"), popular.popular_prefixes);

    const lines = [];
    for (const server of Object.keys(logs)) {
      for (const line of logs[server]) {
        lines.push(line);
      }
    }
    lines.sort((a, b) => (a.timestamp < b.timestamp ? 1 : -1));
    const body = $("recent-logs").tBodies[0];
    body.replaceChildren();
    for (const line of lines.slice(0, 25)) {
      const row = body.insertRow();
      cell(row, clock(Date.parse(line.timestamp)));
      cell(row, line.command);
      cell(row, line.key);
      cell(row, line.status);
      cell(row, number.format(line.size), "num");
      label(row);
    }
    await refreshPrefixes(prefixes);
  }

  async function refreshPrefixes(prefixes) {
    const stats = await Promise.all(prefixes.map(
      (p) => series("/introspection/prefixes/" + p.id + "/stats", null, 3600)));
    const body = $("prefixes").tBodies[0];
    body.replaceChildren();
    prefixes.forEach((prefix, i) => {
      const row = body.insertRow();
      row.dataset.prefix = prefix.name;
      cell(row, prefix.name);
      const answer = stats[i][0];
      const last = answer && answer.values.length ? answer.values[answer.values.length - 1] : null;
      const column = (name) => (last ? last[answer.columns.indexOf(name)] : null);
      const fmt = (v, f) => (v === null ? "–" : f(v));
      cell(row, fmt(column("num_keys"), (v) => number.format(v)), "num");
      cell(row, fmt(column("total_size"), bytes), "num");
      cell(row, fmt(column("total_hits_rate"), (v) => v.toFixed(2)), "num");
      cell(row, fmt(column("total_misses_rate"), (v) => v.toFixed(2)), "num");
      cell(row, fmt(column("total_mutations_rate"), (v) => v.toFixed(2)), "num");
      const actions = row.insertCell();
      actions.appendChild(button("Stop watching", () => act(
        "Stop watching " + prefix.name + "?",
        () => api("DELETE", "/introspection/prefixes/" + prefix.id),
        "stopped watching " + prefix.name, refreshIntrospection), "danger"));
      label(row);
    });
  }

  async function refreshInfo() {
    info = await api("GET", "/info");
    $("set-id").textContent = info.id + " (" + info.uuid + ")";
    $("set-name").textContent = info.name;
    $("set-plan").textContent = info.plan_name + " (" + bytes(info.plan) + ", " +
      number.format(info.connection_limit) + " connections)";
    $("set-cluster").textContent = info.cluster_name;
    $("set-servers").textContent = info.servers.join(", ");
    $("set-enabled").textContent = info.enabled ? "yes" : "no (disabled)";
    $("enable-cache").hidden = info.enabled;
    $("switch-cluster").hidden = !info.can_switch;
    const primary = info.credentials.find((c) => c.primary) || info.credentials[0];
    $("env-lines").textContent = [
      "MEMCACHIER_SERVERS=" + info.servers.join(","),
      "MEMCACHIER_USERNAME=" + (primary ? primary.sasl_username : ""),
      "MEMCACHIER_PASSWORD=" + (primary ? primary.sasl_password : ""),
    ].join("\n");
    $("conn-limit").textContent = number.format(info.connection_limit);
    renderCredentials();
  }

  function renderCredentials() {
    const manage = info.can_manage_credentials;
    $("cred-dev").hidden = manage;
    $("cred-create").hidden = !manage;
    const body = $("credentials").tBodies[0];
    body.replaceChildren();
    for (const c of info.credentials) {
      const row = body.insertRow();
      row.dataset.username = c.sasl_username;
      const name = cell(row, c.sasl_username);
      if (c.primary) {
        const tag = document.createElement("span");
        tag.className = "tag";
        tag.textContent = "primary";
        name.append(" ", tag);
      }
      const pw = row.insertCell();
      const code = document.createElement("code");
      code.textContent = c.sasl_password;
      pw.appendChild(code);
      const boxes = {};
      for (const cap of ["write", "flush", "api"]) {
        const td = row.insertCell();
        const box = document.createElement("input");
        box.type = "checkbox";
        box.checked = c[cap + "_capability"];
        box.disabled = !manage;
        box.setAttribute("aria-label", cap + " capability of " + c.sasl_username);
        boxes[cap] = box;
        box.addEventListener("change", () => {
          const body = {
            write_capability: boxes.write.checked,
            flush_capability: boxes.flush.checked,
            api_capability: boxes.api.checked,
          };
          run(() => api("PATCH", "/credentials/" + encodeURIComponent(c.sasl_username), body),
            "capabilities of " + c.sasl_username + " saved", refreshInfo);
        });
        td.appendChild(box);
      }
      const actions = row.insertCell();
      if (!c.primary) {
        actions.appendChild(button("Make primary", () => act(
          "Make " + c.sasl_username + " the primary credential? Apps using MEMCACHIER_USERNAME " +
            "must be given the new one.",
          () => api("POST", "/credentials/primary/" + encodeURIComponent(c.sasl_username)),
          c.sasl_username + " is the primary credential", refreshInfo)));
        if (manage) {
          actions.appendChild(button("Delete", () => act(
            "Delete credential " + c.sasl_username + "? Clients using it are refused.",
            () => api("DELETE", "/credentials/" + encodeURIComponent(c.sasl_username)),
            "deleted " + c.sasl_username, refreshInfo), "danger"));
        }
      }
      label(row);
    }
  }

  // -- alerts (the routes of docs/alerts.md)

  const TRIGGERS = {
    hit_rate: ["hit rate below ", " %"],
    memory_usage: ["memory used above ", " % of the plan"],
    connections: ["connections above ", " % of the limit"],
    evictions: ["evictions above ", " per minute"],
    auth_errors: ["failed logins above ", " per minute"],
    latency: ["latency above ", " ms"],
    held_back: ["held back above ", " % of the window"],
  };
  let alertsShown = [];
  let eventsOf = null;

  function condition(a) {
    const words = TRIGGERS[a.trigger_type] || [a.trigger_type + " ", ""];
    return words[0] + a.trigger_threshold + words[1];
  }

  function destination(c) {
    if (c.delivery_type === "email") {
      return c.email;
    }
    if (c.delivery_type === "slack") {
      return c.slack_url + (c.slack_channel ? " " + c.slack_channel : "");
    }
    return c.webhook_url;
  }

  async function refreshAlerts() {
    const [alerts, configs] = await Promise.all([api("GET", "/alerts"), api("GET", "/alerts/configs")]);
    alertsShown = alerts;
    const byId = new Map(configs.map((c) => [c.id, c]));

    const select = $("alert-config");
    const chosen = select.value;
    select.replaceChildren();
    for (const c of configs) {
      const option = document.createElement("option");
      option.value = String(c.id);
      option.textContent = c.delivery_type + ": " + destination(c);
      select.appendChild(option);
    }
    if (chosen && byId.has(Number(chosen))) {
      select.value = chosen;
    }

    const configRows = $("alert-configs").tBodies[0];
    configRows.replaceChildren();
    for (const c of configs) {
      const row = configRows.insertRow();
      row.dataset.configId = String(c.id);
      cell(row, c.delivery_type);
      cell(row, destination(c));
      row.insertCell().appendChild(button("Delete", () => act(
        "Delete the " + c.delivery_type + " delivery config " + destination(c) + "?",
        () => api("DELETE", "/alerts/configs/" + c.id), "delivery config deleted", refreshAlerts),
      "danger"));
      label(row);
    }

    const rows = $("alerts").tBodies[0];
    rows.replaceChildren();
    for (const a of alerts) {
      const row = rows.insertRow();
      row.dataset.alertId = String(a.id);
      cell(row, condition(a));
      const c = byId.get(a.delivery_config_id);
      cell(row, c ? c.delivery_type + ": " + destination(c) : "–");
      cell(row, a.description);
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = a.enabled;
      box.setAttribute("aria-label", "alert " + a.id + " enabled");
      box.addEventListener("change", () => run(
        () => api("PUT", "/alerts/" + a.id, { enabled: box.checked }),
        "alert " + a.id + (box.checked ? " enabled" : " disabled"), refreshAlerts));
      row.insertCell().appendChild(box);
      const actions = row.insertCell();
      actions.appendChild(button("Edit", () => editAlert(a)));
      actions.appendChild(button("Events", () => {
        eventsOf = a.id;
        guarded(refreshEvents)();
      }));
      actions.appendChild(button("Delete", () => act(
        "Delete the alert \u201c" + condition(a) + "\u201d and its events?",
        () => api("DELETE", "/alerts/" + a.id), "alert deleted", refreshAlerts), "danger"));
      label(row);
    }
    if (!alerts.some((a) => a.id === eventsOf)) {
      eventsOf = alerts.length ? alerts[0].id : null;
    }
    await refreshEvents();
  }

  async function refreshEvents() {
    const rows = $("alert-events").tBodies[0];
    if (eventsOf === null) {
      rows.replaceChildren();
      $("events-of").textContent = "";
      return;
    }
    const shown = eventsOf;
    const events = await api("GET", "/alerts/" + shown + "/events");
    const alert = alertsShown.find((a) => a.id === shown);
    $("events-of").textContent = "of " + (alert ? condition(alert) : "alert " + shown);
    rows.replaceChildren();
    for (const e of events.slice(0, 20)) {
      const row = rows.insertRow();
      cell(row, clock(Date.parse(e.time), true));
      cell(row, e.kind);
      cell(row, String(e.value));
      cell(row, String(e.threshold));
      cell(row, e.deliveries.map((d) => d.delivery_type + " " + d.status +
        (d.last_error && d.status !== "delivered" ? " (" + d.last_error + ")" : "")).join(", "));
      label(row);
    }
  }

  function editAlert(a) {
    $("alert-id").value = String(a.id);
    $("alert-form-title").textContent = "Edit alert " + a.id;
    $("alert-trigger").value = a.trigger_type;
    $("alert-threshold").value = String(a.trigger_threshold);
    $("alert-config").value = String(a.delivery_config_id);
    $("alert-description").value = a.description;
    $("alert-enabled").checked = a.enabled;
    $("alert-save").textContent = "Save alert";
    $("alert-cancel").hidden = false;
    $("alert-trigger").focus();
  }

  function resetAlertForm() {
    $("alert-form").reset();
    $("alert-id").value = "";
    $("alert-form-title").textContent = "New alert";
    $("alert-save").textContent = "Create alert";
    $("alert-cancel").hidden = true;
  }

  function wireAlerts() {
    $("alert-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const id = $("alert-id").value;
      const body = {
        trigger_type: $("alert-trigger").value,
        trigger_threshold: Number($("alert-threshold").value),
        delivery_config_id: Number($("alert-config").value),
        description: $("alert-description").value,
        enabled: $("alert-enabled").checked,
      };
      run(() => (id ? api("PUT", "/alerts/" + id, body) : api("POST", "/alerts", body)),
        id ? "alert " + id + " saved" : "alert created", async () => {
          resetAlertForm();
          await refreshAlerts();
        });
    });
    $("alert-cancel").addEventListener("click", resetAlertForm);
    const showChannel = () => {
      const slack = $("config-type").value === "slack";
      $("config-channel").hidden = !slack;
      document.querySelector('label[for="config-channel"]').hidden = !slack;
    };
    $("config-type").addEventListener("change", showChannel);
    showChannel();
    $("config-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const kind = $("config-type").value;
      const target = $("config-target").value;
      const body = { delivery_type: kind };
      if (kind === "email") {
        body.email = target;
      } else if (kind === "slack") {
        body.slack_url = target;
        body.slack_channel = $("config-channel").value;
      } else {
        body.webhook_url = target;
      }
      run(() => api("POST", "/alerts/configs", body), "delivery config added", async () => {
        $("config-form").reset();
        showChannel();
        await refreshAlerts();
      });
    });
  }

  // -- actions

  const dialog = $("confirm");

  /** Ask in the confirmation dialog; resolves true when confirmed. */
  function confirmAction(text) {
    return new Promise((resolve) => {
      $("confirm-text").textContent = text;
      dialog.returnValue = "";
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
      $("confirm-cancel").focus();
    });
  }

  /** Run an API call, report it, then refresh what it changed. */
  async function run(call, done, refresh) {
    try {
      await call();
      say(done);
      if (refresh) {
        await refresh();
      }
    } catch (e) {
      if (!stopped) {
        say("Refused: " + e.message, true);
      }
    }
  }

  async function act(question, call, done, refresh) {
    if (await confirmAction(question)) {
      await run(call, done, refresh);
    }
  }

  function wire() {
    $("flush").addEventListener("click", () => act(
      "Flush every item of this cache? This cannot be undone.",
      () => api("POST", "/flush"), "cache flushed", refreshLive));
    $("reset-stats").addEventListener("click", () => act(
      "Reset the all-time stats of this cache to zero?",
      () => api("POST", "/reset_stats"), "stats reset", refreshLive));
    $("cred-create").addEventListener("click", () => run(
      () => api("POST", "/credentials"), "credential created", refreshInfo));
    $("rotate-sso").addEventListener("click", () => act(
      "Rotate the SSO secret? Every dashboard session and link of this cache ends, this one too.",
      async () => {
        await api("POST", "/rotate_sso");
        sessionEnded();
      }, "SSO secret rotated"));
    $("enable-cache").addEventListener("click", () => run(
      () => api("POST", "/enable_cache"), "cache enabled", refreshInfo));
    $("switch-cluster").addEventListener("click", () => act(
      "Switch this cache to another cluster? Its data does not move: the cache starts empty.",
      () => api("POST", "/switch_cluster"), "cluster switched", refreshInfo));
    $("copy-env").addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText($("env-lines").textContent);
        say("copied");
      } catch (e) {
        window.getSelection().selectAllChildren($("env-lines"));
        say("selected: press Ctrl+C (or ⌘C) to copy");
      }
    });
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("key-input").value;
      run(async () => {
        const rows = await api("GET", "/introspection/key_stats?" + new URLSearchParams({ key: key }));
        const table = $("key-stats");
        const body = table.tBodies[0];
        body.replaceChildren();
        for (const r of rows) {
          const row = body.insertRow();
          cell(row, clock(Date.parse(r.timestamp)));
          cell(row, r.in_cache ? "yes" : "no");
          cell(row, bytes(r.size), "num");
          cell(row, number.format(r.hit_count), "num");
          cell(row, number.format(r.miss_count), "num");
          cell(row, number.format(r.mutation_count), "num");
          label(row);
        }
        table.hidden = false;
      }, rowsSaid(key));
    });
    $("prefix-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("prefix-input");
      const name = input.value;
      run(() => api("POST", "/introspection/prefixes", { name: name }),
        "watching " + name, async () => {
          input.value = "";
          await refreshIntrospection();
        });
    });
    for (const b of document.querySelectorAll(".ranges button")) {
      b.addEventListener("click", () => {
        range = Number(b.dataset.range);
        for (const other of document.querySelectorAll(".ranges button")) {
          other.setAttribute("aria-pressed", String(other === b));
        }
        guarded(refreshGraphs)();
      });
    }
  }

  function rowsSaid(key) {
    return "stats of key " + key;
  }

  // -- polling

  function refreshLive() {
    return Promise.all([refreshStats(), refreshIntrospection()]);
  }

  /** A refresh that reports its failure instead of throwing. */
  function guarded(refresh) {
    return async () => {
      if (stopped || document.hidden) {
        return;
      }
      try {
        await refresh();
        if (statusLine.classList.contains("error") && statusLine.dataset.poll) {
          say("");
        }
      } catch (e) {
        if (!stopped) {
          say("Could not refresh: " + e.message, true);
          statusLine.dataset.poll = "1";
        }
      }
    };
  }

  function every(ms, refresh) {
    const tick = guarded(refresh);
    tick();
    window.setInterval(tick, ms);
  }

  makeCharts();
  wire();
  wireAlerts();
  guarded(refreshInfo)().then(() => {
    every(LIVE_MS, refreshLive);
    every(HOUR_MS, refreshHour);
    every(INFO_MS, refreshInfo);
    every(HOUR_MS, refreshAlerts);
    let lastGraphs = 0;
    every(HOUR_MS, async () => {
      if (range <= 3600 || Date.now() - lastGraphs >= GRAPH_MS) {
        lastGraphs = Date.now();
        await refreshGraphs();
      }
    });
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      guarded(refreshLive)();
    }
  });
})();
