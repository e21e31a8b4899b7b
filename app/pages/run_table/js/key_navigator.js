// The arrow keys move the run table's selection one run up or down (the server turns the page when
// needed); ignored while typing in an input, an editor or a cell being edited.
export function render({ model, el }) {
  el.style.display = 'none'
  const typing = (e) => {
    const t = e.composedPath()[0]
    return t && (t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName))
  }
  const onKey = (e) => {
    if ((e.key !== 'ArrowDown' && e.key !== 'ArrowUp') || e.altKey || e.ctrlKey || e.metaKey || typing(e)) return
    if (!tableViews().some((v) => v.el && v.el.offsetParent !== null)) return  // the table is not shown
    e.preventDefault()
    model.send_msg({ step: e.key === 'ArrowDown' ? 1 : -1 })
  }
  document.addEventListener('keydown', onKey)
  model.on('remove', () => document.removeEventListener('keydown', onKey))
}
