// Loaded in every page's <head> (app/server/main.py): speed-ups for Tabulator, installed on each table as it is built.
//
// Tabulator (6.4) sizes header cells in ColumnManager.verticalAlignHeaders(): each column writes its height
// and the next reads its parent's, so the browser lays the page out again for every column (~130 ms a
// call for 300 grouped columns, 5 calls while the run table opens). The version below gives every column
// the same heights but reads and writes the DOM in batches, once per header level.
(() => {
  function batchedVerticalAlignHeaders() {
    if (this.redrawBlock) return;
    const cols = this.columns;
    this.headersElement.style.height = "";
    cols.forEach(c => c.clearVerticalAlign());
    let top = 0;
    cols.forEach(c => { const h = c.getHeight(); if (h > top) top = h; });
    this.headersElement.style.height = top + "px";
    let level = cols.map(c => [c, top]);
    while (level.length) {
      const content = level.map(([c]) => c.isGroup ? c.contentElement.offsetHeight : 0);
      level.forEach(([c, h], i) => {
        c.element.style.height = h + "px";
        if (c.isGroup) c.groupElement.style.minHeight = (h - content[i]) + "px";
      });
      const next = [];
      level.forEach(([c]) => {
        if (c.isGroup && c.columns.length) {
          const gh = c.groupElement.clientHeight;
          c.columns.forEach(child => next.push([child, gh]));
        }
      });
      level.forEach(([c]) => c.dispatch("column-height", c, c.element.style.height));
      level = next;
    }
    this.table.rowManager.adjustTableSize();
  }

  function install(Tabulator) {
    const proto = Tabulator && Tabulator.prototype;
    if (!proto || proto.__damnitSpeedups || typeof proto._initializeTable !== "function") return;
    const initializeTable = proto._initializeTable;
    proto._initializeTable = function (...args) {
      const manager = this.columnManager;
      const original = manager.verticalAlignHeaders;
      manager.verticalAlignHeaders = function () {
        try {
          return batchedVerticalAlignHeaders.call(this);
        } catch (e) {  // a Tabulator whose internals changed: its own method still works
          console.warn("DAMNIT: batched header alignment failed, using Tabulator's", e);
          return original.call(this);
        }
      };
      return initializeTable.apply(this, args);
    };
    proto.__damnitSpeedups = true;
  }

  if (window.Tabulator) {
    install(window.Tabulator);
  } else {  // this script ran first: install when Tabulator's bundle defines it
    let value;
    Object.defineProperty(window, "Tabulator", {
      configurable: true, enumerable: true,
      get() { return value; },
      set(v) { value = v; install(v); },
    });
  }
})();
