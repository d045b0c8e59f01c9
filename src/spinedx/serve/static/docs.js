"use strict";
// Renders /openapi.json as a list of operations (no external code: the page's CSP allows only this server).
(async function () {
  const root = document.getElementById("docs");
  const spec = await (await fetch("/openapi.json")).json();
  const el = (tag, text, cls) => { const e = document.createElement(tag); if (text) e.textContent = text; if (cls) e.className = cls; return e; };
  root.replaceChildren();
  root.append(el("h2", `${spec.info.title} ${spec.info.version}`), el("p", spec.info.description || ""));
  const p = el("p"); const a = el("a", "/openapi.json"); a.href = "/openapi.json"; p.append("Machine-readable description: ", a,
    ". Every /api request needs 'Authorization: Bearer TOKEN' when the server was started with --token.");
  root.append(p);
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const box = el("div", null, "op");
      const head = el("div"); head.append(el("span", method.toUpperCase(), "method"), " ", el("code", path));
      box.append(head);
      if (op.summary) box.append(el("b", op.summary));
      if (op.description) box.append(el("p", op.description));
      const params = (op.parameters || []).map((q) => `${q.name} (${q.in}${q.required ? ", required" : ""})` +
        (q.description ? `: ${q.description}` : ""));
      if (params.length) { const ul = el("ul"); params.forEach((t) => ul.append(el("li", t))); box.append(ul); }
      root.append(box);
    }
  }
})();
