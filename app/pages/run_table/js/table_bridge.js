// The run table's browser side (tabulator.TableBridge): right-click menus on rows and headers, double
// click to inspect, the layout the user makes by dragging (widths, order), the layout kept in this
// browser's storage, and the clipboard. Every action goes to the server as a message naming the table,
// and the server decides (rights included); menu labels are built as text nodes, never as HTML.
const FIXED = ['run', 'start_time', 'comment']

function textLabel(text) {
  const span = document.createElement('span')
  span.textContent = text
  return span
}

function viewOf(tabulator) {
  return tableViews().find(v => v.tabulator === tabulator) || null
}

function runOf(row) {
  const cell = row.getCell('run')
  const text = cell ? cell.getElement().textContent : ''
  const run = parseInt(text, 10)
  return Number.isFinite(run) ? run : null
}

// A dialog with the text selected, for when the clipboard can't be written (a page not served over
// https or from localhost has no clipboard API).
function showForCopying(text) {
  const box = document.createElement('div')
  box.className = 'dmn-copy-dialog'
  Object.assign(box.style, {
    position: 'fixed', zIndex: '10002', left: '50%', top: '20%', transform: 'translateX(-50%)',
    background: '#fff', color: '#000', border: '1px solid #888', boxShadow: '0 2px 10px rgba(0,0,0,.3)',
    padding: '10px', font: '13px sans-serif', width: '60vw',
  })
  const note = document.createElement('div')
  note.textContent = 'This browser does not let the page write to the clipboard: press Ctrl+C (or Cmd+C) to copy.'
  const area = document.createElement('textarea')
  area.value = text
  Object.assign(area.style, {width: '100%', height: '40vh', fontFamily: 'monospace'})
  const close = document.createElement('button')
  close.textContent = 'Close'
  close.onclick = () => box.remove()
  box.append(note, area, close)
  document.body.appendChild(box)
  area.focus()
  area.select()
}

// Panel's TabulatorView.setSelection scrolls to the selected rows, which redraws them and closes an
// editor just opened: the first click on a comment cell selects its row, the server confirms the
// selection, and the editor vanished. While an edit is open, select without scrolling.
function keepEditorsOpen(view) {
  const original = view.setSelection.bind(view)
  view.setSelection = () => {
    const edit = view.tabulator && view.tabulator.modules && view.tabulator.modules.edit
    if (!(edit && edit.currentCell) || view._selection_updating) return original()
    view._selection_updating = true
    try {
      view.tabulator.deselectRow()
      view.tabulator.selectRow(view.model.source.selected.indices)
    } finally {
      view._selection_updating = false
    }
  }
}

export function render({ model, el }) {
  el.style.display = 'none'
  const send = (msg) => model.send_msg(msg)
  const waiting = new Map()  // clipboard requests waiting for the server's text
  let nextRequest = 1

  // The layout kept in this browser, for the server to apply.
  let stored = null
  try { stored = JSON.parse(window.localStorage.getItem(model.storage_key) || 'null') } catch (e) { stored = null }
  send({kind: 'stored-layout', layout: stored})

  model.on('msg:custom', (msg) => {
    if (msg.kind === 'store') {
      try { window.localStorage.setItem(model.storage_key, JSON.stringify(msg.layout)) } catch (e) { /* full or off */ }
    } else if (msg.kind === 'clipboard') {
      const resolve = waiting.get(msg.request)
      if (resolve) { waiting.delete(msg.request); resolve(msg.text) }
    }
  })

  // Copy text the server makes. The clipboard is written in the click's own turn with a promise of
  // the text, so the browser keeps the user's permission while the server answers.
  function copyFromServer(request) {
    const id = nextRequest++
    const text = new Promise((resolve) => {
      waiting.set(id, resolve)
      setTimeout(() => { if (waiting.delete(id)) resolve(null) }, 20000)
    })
    send({...request, request: id})
    const fallback = () => text.then(t => { if (t != null) showForCopying(t) })
    if (navigator.clipboard && window.ClipboardItem) {
      const blob = text.then(t => {
        if (t == null) throw new Error('no text from the server')
        return new Blob([t], {type: 'text/plain'})
      })
      navigator.clipboard.write([new ClipboardItem({'text/plain': blob})]).catch(fallback)
    } else {
      fallback()
    }
  }

  function rowMenu(e, row) {
    const tabulator = row.getTable()
    const view = viewOf(tabulator)
    if (view == null) return false
    const table = view.model.id
    const rows = row.isSelected() ? tabulator.getSelectedRows() : [row]
    const indices = rows.map(r => r.getData()._index)
    const runs = rows.map(runOf).filter(r => r != null)
    const run = runOf(row)
    const index = row.getData()._index
    const several = runs.length === 1 ? `run ${runs[0]}` : `${runs.length} runs`
    return [
      {label: textLabel(`Copy ${several} as Markdown`),
       action: () => copyFromServer({kind: 'copy', table, indices})},
      {label: textLabel(`Inspect run ${run}`), action: () => send({kind: 'inspect', table, index})},
      {label: textLabel(model.can_write ? `Reprocess ${several}…` : `Reprocess ${several} (not allowed here)`),
       disabled: !model.can_write, action: () => send({kind: 'reprocess', table, indices})},
      {label: textLabel(`Processing log of run ${run}`), action: () => send({kind: 'logs', table, index})},
    ]
  }

  function headerMenu(e, column) {
    const view = viewOf(column.getTable())
    const field = column.getField()
    if (view == null || !field || field === '_index') return false
    const table = view.model.id
    const title = (model.titles || {})[field] || field
    const items = [
      {label: textLabel('Sort ascending'), action: () => send({kind: 'sort', table, field, dir: 'asc'})},
      {label: textLabel('Sort descending'), action: () => send({kind: 'sort', table, field, dir: 'desc'})},
      {separator: true},
      {label: textLabel(`Plot “${title}” against run`), action: () => send({kind: 'plot', table, field})},
      {label: textLabel(`Filter on “${title}”…`), action: () => send({kind: 'filter', table, field})},
    ]
    if (field !== 'run')
      items.push({label: textLabel(`Hide “${title}”`), action: () => send({kind: 'hide', table, field})})
    if (model.can_delete && !FIXED.includes(field)) {
      items.push({separator: true})
      items.push({label: textLabel(`Delete variable “${title}”…`), action: () => send({kind: 'delete', table, field})})
    }
    return items
  }

  window.damnitRunTableMenus = {row: rowMenu, header: headerMenu}

  // Double click on a row (not on a cell being edited): inspect that run, like the original.
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
        send({kind: 'open', table: view.model.id, index: row.getData()._index,
              field: cellEl ? cellEl.getAttribute('tabulator-field') : null})
      return
    }
  }
  document.addEventListener('dblclick', onDblClick)

  // Widths and order the user makes by dragging go to the server, which keeps the layout.
  const hooked = new WeakSet()
  const hook = () => {
    for (const view of tableViews()) {
      const tab = view.tabulator
      if (hooked.has(tab) || !tab.initialized) continue
      hooked.add(tab)
      tab.on('columnResized', (column) => {
        const field = column.getField()
        if (field) send({kind: 'resized', table: view.model.id, field, width: Math.round(column.getWidth())})
      })
      tab.on('columnMoved', () => {
        const order = tab.getColumns().map(c => c.getField()).filter(f => f && f !== '_index')
        send({kind: 'moved', table: view.model.id, order})
      })
      keepEditorsOpen(view)
    }
  }
  hook()
  const timer = setInterval(hook, 700)

  installSparklineHover()

  model.on('remove', () => {
    clearInterval(timer)
    document.removeEventListener('dblclick', onDblClick)
    if (window.damnitRunTableMenus && window.damnitRunTableMenus.row === rowMenu) delete window.damnitRunTableMenus
  })
}
