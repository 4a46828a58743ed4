"""Static CSS and script of the dashboard page (data arrive as JSON; DOM text via textContent)."""

from __future__ import annotations

__all__ = ["PAGE_CSS", "PAGE_SCRIPT"]

PAGE_CSS = """
body { font-family: system-ui, sans-serif; margin: 0 1.5rem 2rem; color: #222; }
header h1 { font-size: 1.4rem; margin: 1rem 0 0.2rem; }
#summary { color: #444; margin: 0.2rem 0; }
#status { color: #a33; margin: 0; min-height: 1em; }
.plot { height: 460px; }
.plot.wide { width: 100%; }
.row { display: flex; gap: 1rem; flex-wrap: wrap; }
.row .plot { flex: 1 1 420px; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }
td.text { text-align: left; font-family: monospace; }
th { text-align: right; }
#verdicts { margin: 0.3rem 0; padding-left: 1.2rem; color: #1a5; }
.note { color: #555; font-size: 0.85rem; }
section h2 { font-size: 1.1rem; }
"""

PAGE_SCRIPT = r"""
(function () {
  "use strict";
  const CONFIG = {responsive: true, displaylogo: false};
  let selected = null;
  let shownOptions = "";

  function byId(id) { return document.getElementById(id); }
  function pct(v) { return v === null ? "-" : (100 * v).toFixed(2) + "%"; }
  function num(v) { return v === null ? "-" : Math.round(v).toLocaleString("en-US"); }

  function summaryLine(s) {
    const states = Object.entries(s.states)
      .map(([state, n]) => n + " " + state.toLowerCase()).join(", ");
    const parts = [s.trials + " trials (" + (states || "none yet") + ")",
                   "front: " + s.front_size];
    if (s.hypervolume !== null) {
      parts.push("hypervolume " + s.hypervolume.toFixed(4) + " (reference: accuracy "
                 + s.reference[0] + ", ACE v2 " + num(s.reference[1]) + ")");
    }
    if (s.dataset) parts.push("data set " + s.dataset);
    if (s.sampler) parts.push("sampler " + s.sampler);
    if (s.cost_table) parts.push("cost table " + s.cost_table);
    if (s.run) parts.push("run " + s.run);
    parts.push("updated " + s.updated);
    return parts.join(" \u00b7 ");
  }

  function draw(id, figure) {
    Plotly.react(byId(id), figure.data, figure.layout, CONFIG);
  }

  function cell(row, value, isText) {
    const td = document.createElement("td");
    td.textContent = value;
    if (isText) td.className = "text";
    row.appendChild(td);
  }

  function frontTable(records) {
    const head = byId("front").tHead;
    if (!head.rows.length) {
      const tr = head.insertRow();
      const unit = " (" + (latest ? latest.summary.cost_unit : "bit-ops") + ")";
      for (const name of ["trial", "proxy acc.", "final acc.", "ACE v2" + unit, "ACE v1" + unit,
                          "archid", "bits w/a per layer", "baseline", "matches baseline",
                          "same arch"]) {
        const th = document.createElement("th");
        th.textContent = name;
        tr.appendChild(th);
      }
    }
    const body = byId("front").tBodies[0];
    body.replaceChildren();
    for (const r of records) {
      const tr = body.insertRow();
      cell(tr, "#" + r.number);
      cell(tr, pct(r.accuracy));
      cell(tr, pct(r.final_accuracy));
      cell(tr, num(r.ace_v2));
      cell(tr, num(r.ace_v1));
      cell(tr, r.archid || "", true);
      cell(tr, r.bits || "", true);
      cell(tr, r.baseline || "", true);
      cell(tr, r.matches || "", true);
      cell(tr, r.same_archid || "", true);
    }
  }

  function breakdown(data) {
    const select = byId("breakdown-trial");
    const available = new Set(Object.keys(data.breakdowns)
      .concat(Object.keys(data.breakdown_errors)));
    const order = data.front.map(r => String(r.number)).filter(k => available.has(k));
    const options = order.join(",");
    if (options !== shownOptions) {
      select.replaceChildren();
      for (const key of order) {
        const option = document.createElement("option");
        option.value = key;
        option.textContent = "#" + key;
        select.appendChild(option);
      }
      shownOptions = options;
    }
    if (selected === null || !available.has(selected)) {
      // the most accurate searched architecture (a baseline has nothing to be compared with)
      const searched = data.front.filter(r => !r.baseline && available.has(String(r.number)));
      selected = searched.length ? String(searched[searched.length - 1].number)
        : (order.length ? order[order.length - 1] : null);
    }
    const note = byId("breakdown-note");
    if (selected === null) {
      note.textContent = "no front trial with an architecture yet";
      Plotly.purge(byId("breakdown"));
      Plotly.purge(byId("breakdown_ops"));
      return;
    }
    select.value = selected;
    if (selected in data.breakdowns) {
      note.textContent = "";
      draw("breakdown", data.breakdowns[selected]);
      draw("breakdown_ops", data.breakdown_ops[selected]);
    } else {
      note.textContent = "no breakdown: " + data.breakdown_errors[selected];
      Plotly.purge(byId("breakdown"));
      Plotly.purge(byId("breakdown_ops"));
    }
  }

  let latest = null;
  function render(data) {
    latest = data;
    byId("title").textContent = data.title;
    document.title = data.title;
    byId("summary").textContent = summaryLine(data.summary);
    for (const id of ["pareto", "rungs", "hypervolume", "bits", "proxy_final", "importance",
                      "timeline"]) {
      draw(id, data.figures[id]);
    }
    const verdicts = byId("verdicts");
    verdicts.replaceChildren();
    for (const line of data.summary.verdicts) {
      const item = document.createElement("li");
      item.textContent = line;
      verdicts.appendChild(item);
    }
    byId("bits-legend").textContent = data.summary.bits_legend;
    breakdown(data);
    frontTable(data.front);
  }

  byId("breakdown-trial").addEventListener("change", function (event) {
    selected = event.target.value;
    if (latest !== null) breakdown(latest);
  });

  async function refresh() {
    try {
      const response = await fetch("data.json", {cache: "no-store"});
      if (!response.ok) throw new Error("HTTP " + response.status);
      render(await response.json());
      byId("status").textContent = "";
    } catch (error) {
      byId("status").textContent = "live update failed: " + error.message;
    }
  }

  render(JSON.parse(byId("pikenas-data").textContent));
  if (PIKENAS_LIVE) setInterval(refresh, PIKENAS_REFRESH_MS);
})();
"""
