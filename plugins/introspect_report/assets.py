"""The site's one style sheet and one small script (no libraries, no network)."""

STYLE = """\
:root { --ink: #1d232a; --soft: #5b6670; --line: #d8dde2; --accent: #1f5fa8; --dead: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink);
       background: #f7f8fa; }
header { background: #fff; border-bottom: 1px solid var(--line); padding: 8px 16px; display: flex; gap: 16px;
         align-items: baseline; flex-wrap: wrap; }
header .brand { font-weight: 600; }
header a { color: var(--accent); text-decoration: none; }
main { padding: 12px 16px 32px; max-width: 1400px; }
h1 { font-size: 20px; margin: 8px 0 12px; }
h2 { font-size: 16px; margin: 20px 0 8px; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f4; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
a { color: var(--accent); }
.muted { color: var(--soft); }
.pager { display: flex; gap: 16px; margin: 4px 0 12px; }
.toolbar { display: flex; gap: 8px; align-items: center; margin: 0 0 12px; }
.toolbar button { font: inherit; padding: 3px 10px; border: 1px solid var(--line); background: #fff; border-radius: 4px;
                  cursor: pointer; }
.toolbar button[aria-pressed="true"] { background: var(--accent); color: #fff; border-color: var(--accent); }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(84px, 1fr)); gap: 6px; }
.card { display: block; background: #fff; border: 1px solid var(--line); border-radius: 4px; padding: 4px;
        text-decoration: none; color: var(--ink); font-size: 11px; text-align: center;
        content-visibility: auto; contain-intrinsic-size: auto 90px; }
.card:focus, .card:hover { outline: 2px solid var(--accent); outline-offset: 0; }
.card img { width: 64px; height: 64px; object-fit: contain; image-rendering: pixelated; background: #808080;
            display: block; margin: 0 auto 2px; }
.card.dead { border-color: var(--dead); }
.card.dead .tag { color: var(--dead); font-weight: 600; }
.pair { display: inline-flex; gap: 4px; }
.pair img, img.tile { width: 96px; height: 96px; object-fit: contain; image-rendering: pixelated; background: #808080; }
.images { display: flex; flex-wrap: wrap; gap: 8px; }
.images figure { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 4px; padding: 4px;
                 text-align: center; font-size: 12px; }
.images figure img { display: block; }
img.input { width: 224px; height: auto; image-rendering: pixelated; }
img.panel { max-width: 320px; height: auto; image-rendering: pixelated; }
img.figure { max-width: 100%; height: auto; image-rendering: pixelated; }
.strip { display: flex; flex-wrap: wrap; gap: 8px; }
.strip a { text-decoration: none; color: var(--ink); font-size: 12px; text-align: center; background: #fff;
           border: 1px solid var(--line); border-radius: 4px; padding: 4px; }
kbd { border: 1px solid var(--line); border-bottom-width: 2px; border-radius: 3px; padding: 0 4px; font-size: 11px;
      background: #fff; }
"""

SCRIPT = """\
// introspect report: sorting and keyboard navigation. No libraries, no network.
(function () {
  "use strict";
  function sortGrid(grid, key) {
    var cards = Array.prototype.slice.call(grid.children);
    cards.sort(function (a, b) {
      if (key === "activation") {
        var d = parseFloat(b.dataset.activation) - parseFloat(a.dataset.activation);
        if (d !== 0 && !isNaN(d)) { return d; }
      }
      return parseInt(a.dataset.index, 10) - parseInt(b.dataset.index, 10);
    });
    var frag = document.createDocumentFragment();
    cards.forEach(function (c) { frag.appendChild(c); });
    grid.appendChild(frag);
    grid.dataset.sort = key;
    document.querySelectorAll("button[data-sort]").forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.dataset.sort === key));
    });
    try { sessionStorage.setItem("introspect-sort", key); } catch (e) { /* file:// storage may be off */ }
  }
  function columns(grid) {
    var cards = grid.children;
    if (cards.length < 2) { return 1; }
    var top = cards[0].offsetTop, n = 0;
    while (n < cards.length && cards[n].offsetTop === top) { n += 1; }
    return Math.max(1, n);
  }
  function gridKeys(grid, ev) {
    var cards = Array.prototype.slice.call(grid.children);
    var i = cards.indexOf(document.activeElement);
    if (i < 0) { return false; }
    var step = {ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(grid), ArrowUp: -columns(grid)}[ev.key];
    if (step === undefined) { return false; }
    var j = Math.min(cards.length - 1, Math.max(0, i + step));
    cards[j].focus();
    return true;
  }
  function follow(rel) {
    var link = document.querySelector('a[rel="' + rel + '"]');
    if (link) { window.location.href = link.href; return true; }
    return false;
  }
  document.addEventListener("DOMContentLoaded", function () {
    var grid = document.getElementById("maps");
    if (grid) {
      document.querySelectorAll("button[data-sort]").forEach(function (b) {
        b.addEventListener("click", function () { sortGrid(grid, b.dataset.sort); });
      });
      var saved = null;
      try { saved = sessionStorage.getItem("introspect-sort"); } catch (e) { saved = null; }
      if (saved && saved !== grid.dataset.sort) { sortGrid(grid, saved); }
    }
    document.addEventListener("keydown", function (ev) {
      if (ev.altKey || ev.ctrlKey || ev.metaKey) { return; }
      if (grid && gridKeys(grid, ev)) { ev.preventDefault(); return; }
      var done = false;
      if (ev.key === "ArrowRight" || ev.key === "n") { done = follow("next"); }
      else if (ev.key === "ArrowLeft" || ev.key === "p") { done = follow("prev"); }
      else if (ev.key === "u") { done = follow("up"); }
      else if (grid && (ev.key === "ArrowDown" || ev.key === "ArrowUp") && grid.children.length) {
        grid.children[0].focus(); done = true;
      }
      if (done) { ev.preventDefault(); }
    });
  });
}());
"""
