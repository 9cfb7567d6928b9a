/*
 * The operator's view: every cache with its plan, memory used, latest hit
 * rate, connections and state, read from /admin/caches.json and each
 * cache's API v2 (the operator's session may read every cache).
 */
"use strict";

(function () {
  const REFRESH_MS = 10000;
  const status = document.getElementById("status");
  const body = document.querySelector("#caches tbody");
  const number = new Intl.NumberFormat();
  let stopped = false;

  async function get(path) {
    const response = await fetch(path, {
      headers: { "Accept": "application/json", "X-Requested-With": "memcachier-dashboard" },
      credentials: "same-origin", cache: "no-store",
    });
    if (response.status === 401 || response.status === 403) {
      stopped = true;
      window.location.assign("/admin/");
      throw new Error("signed out");
    }
    if (!response.ok) {
      throw new Error(path + ": " + response.status);
    }
    return response.json();
  }

  function mib(n) {
    return (n / 1048576).toFixed(1) + " MiB";
  }

  function cell(row, text) {
    const td = row.insertCell();
    td.textContent = text;
    return td;
  }

  async function refresh() {
    const caches = await get("/admin/caches.json");
    const start = new Date(Date.now() - 3600 * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
    const details = await Promise.all(caches.map((c) => {
      const api = "/api/v2/caches/" + c.id;
      return Promise.all([
        get(api + "/stats"),
        get(api + "/insight/processed_stats?names=hit_rate&startTime=" + start),
      ]);
    }));
    body.replaceChildren();
    caches.forEach((c, i) => {
      const [stats, hits] = details[i];
      const row = body.insertRow();
      const name = row.insertCell();
      const link = document.createElement("a");
      link.href = "/caches/" + c.id + "/";
      link.textContent = c.name + " (" + c.id + ")";
      name.appendChild(link);
      cell(row, c.plan);
      cell(row, mib(stats.bytes) + " of " + mib(c.memory_limit));
      const values = hits[0] ? hits[0].values : [];
      cell(row, values.length ? (values[values.length - 1][1] * 100).toFixed(1) + " %" : "–");
      cell(row, number.format(stats.curr_connections) + " of " + number.format(c.connection_limit));
      cell(row, c.enabled ? "yes" : "no");
    });
    status.textContent = "";
  }

  async function tick() {
    if (stopped) {
      return;
    }
    try {
      await refresh();
    } catch (e) {
      if (!stopped) {
        status.textContent = "Could not refresh: " + e.message;
      }
    }
  }

  tick();
  window.setInterval(tick, REFRESH_MS);
})();
