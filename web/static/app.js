// Review queue keys: A (aurora), O (other), U (undo), arrows to select. No build step.
"use strict";
(function () {
  const queue = document.getElementById("queue");
  if (!queue) return;
  const csrf = document.querySelector('meta[name="csrf"]').content;
  const status = document.getElementById("status");
  const tiles = () => Array.from(queue.querySelectorAll(".tile"));
  let selected = 0;
  const history = [];  // tiles moved, newest last: U puts the newest back

  function select(i) {
    const all = tiles();
    if (!all.length) return;
    selected = Math.max(0, Math.min(i, all.length - 1));
    all.forEach((t, n) => t.classList.toggle("selected", n === selected));
    all[selected].focus({ preventScroll: false });
  }

  async function post(url, fields) {
    const body = new URLSearchParams(fields);
    const r = await fetch(url, { method: "POST", body, credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRF-Token": csrf } });
    const data = await r.json().catch(() => ({ error: r.status + " " + r.statusText }));
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  }

  function retarget(tile, rel, folder) {
    tile.dataset.rel = rel;
    tile.dataset.folder = folder;
    const enc = rel.split("/").map(encodeURIComponent).join("/");
    tile.querySelector("a").href = "/photo/" + enc;
    tile.querySelector(".folder").textContent = folder;
  }

  async function move(to) {
    const tile = tiles()[selected];
    if (!tile) return;
    try {
      const done = await post("/act/move", { rel: tile.dataset.rel, to });
      history.push({ tile, folder: tile.dataset.folder, rel: tile.dataset.rel });
      retarget(tile, done.rel, done.folder);
      tile.classList.add("done");
      status.textContent = "moved to " + done.folder + ": " + done.rel;
      select(selected + 1);
    } catch (e) { status.textContent = "not moved: " + e.message; }
  }

  async function undo() {
    try {
      const done = await post("/act/undo", {});
      const last = history.pop();
      if (last && done.restored.length) {
        retarget(last.tile, done.restored[0], last.folder);
        last.tile.classList.remove("done");
        select(tiles().indexOf(last.tile));
      }
      status.textContent = "undone: " + done.restored.join(", ");
    } catch (e) { status.textContent = "not undone: " + e.message; }
  }

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.target.matches("input, select, textarea")) return;
    const key = ev.key.toLowerCase();
    if (key === "a") move("aurora");
    else if (key === "o") move("other");
    else if (key === "u") undo();
    else if (key === "arrowright" || key === "j") select(selected + 1);
    else if (key === "arrowleft" || key === "k") select(selected - 1);
    else return;
    ev.preventDefault();
  });
  queue.addEventListener("click", (ev) => {
    const tile = ev.target.closest(".tile");
    if (tile && !ev.target.closest("a")) select(tiles().indexOf(tile));
  });
  select(0);
})();
