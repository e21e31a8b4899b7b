// Reports a double click on a row of the run table (DAMNIT's double-click-to-inspect); the event's
// composed path says which table, row and cell were hit.
export function render({ model, el }) {
  el.style.display = 'none'
  const has = (n, cls) => n.classList != null && n.classList.contains(cls)
  const onDblClick = (e) => {
    const path = e.composedPath()
    const rowEl = path.find(n => has(n, 'tabulator-row'))
    if (rowEl == null) return
    const cellEl = path.find(n => has(n, 'tabulator-cell'))
    for (const view of tableViews()) {
      if (!path.includes(view.tabulator.element)) continue
      const row = view.tabulator.getRows().find(r => r.getElement() === rowEl)
      if (row != null)
        model.send_msg({table: view.model.id, index: row.getData()._index,
                        field: cellEl ? cellEl.getAttribute('tabulator-field') : null})
      return
    }
  }
  document.addEventListener('dblclick', onDblClick)
  model.on('remove', () => document.removeEventListener('dblclick', onDblClick))
}

