// The drag handle between the run table and the run panel: dragging sets the panel's width (a CSS
// variable on the page), remembered per browser with the panel being open or closed.
export function render({ model, el }) {
  const WIDTH = 'damnit.runPanel.width', OPEN = 'damnit.runPanel.open'
  const root = document.documentElement
  const saved = window.localStorage.getItem(WIDTH)
  if (saved) root.style.setProperty('--dmn-panel-width', saved)
  const open = window.localStorage.getItem(OPEN)
  if (open !== null && (open === 'true') !== model.open) model.open = open === 'true'
  el.className = 'dmn-split-handle'
  Object.assign(el.style, { cursor: 'col-resize', width: '6px', height: '100%', borderRadius: '3px',
                            background: 'var(--dmn-border, #d0d0d0)' })
  el.title = 'Drag to resize the run panel'
  el.setAttribute('data-testid', 'run-panel-handle')
  el.addEventListener('mousedown', (start) => {
    start.preventDefault()
    const move = (e) => {
      const width = Math.max(280, Math.min(window.innerWidth * 0.75, window.innerWidth - e.clientX - 16))
      root.style.setProperty('--dmn-panel-width', `${Math.round(width)}px`)
    }
    const up = () => {
      document.removeEventListener('mousemove', move)
      document.removeEventListener('mouseup', up)
      window.localStorage.setItem(WIDTH, root.style.getPropertyValue('--dmn-panel-width'))
      window.dispatchEvent(new Event('resize'))  // plots follow the new width
    }
    document.addEventListener('mousemove', move)
    document.addEventListener('mouseup', up)
  })
  model.on('open', () => {
    window.localStorage.setItem(OPEN, String(model.open))
    setTimeout(() => window.dispatchEvent(new Event('resize')), 50)
  })
}
