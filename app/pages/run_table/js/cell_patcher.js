// Applies cell updates to the browser's Tabulator row by row (RunTabulator.send_patch) and shows the
// right page number in its pager.
function findTable(id) {
  return tableViews().find((v) => v.model && v.model.id === id) || null
}
function fixPagers(done) {
  // Tabulator starts a remote-paginated table on the server's page but leaves its pager
  // buttons on page 1: redraw them once the table is built.
  for (const v of tableViews()) {
    const pager = v.tabulator.modules && v.tabulator.modules.page
    if (done.has(v) || v.model.pagination !== 'remote' || !v.tabulator.initialized || pager == null
        || pager.page !== v.model.page) continue
    pager._setPageButtons()
    done.add(v)
    return true
  }
  return false
}
export function render({ model, el }) {
  el.style.display = 'none'
  const done = new WeakSet()
  let tries = 0
  const timer = setInterval(() => { if (fixPagers(done) || ++tries > 150) clearInterval(timer) }, 200)
  model.on('remove', () => clearInterval(timer))
  model.on('msg:custom', (msg) => {
    const view = findTable(msg.table)
    if (view == null) return
    view.tabulator.updateData(msg.rows)
    // Keep Bokeh's copy of the page in step, silently (an event would redraw the whole page).
    const data = view.model.source.data
    for (const row of msg.rows)
      for (const [k, v] of Object.entries(row))
        if (k !== '_index' && data[k] != null) data[k][row._index] = v
  })
}

