// Every Tabulator view on the page (Bokeh views nest; Tabulator cells live in shadow roots), shared by
// the components that reach into the run table from the browser. Prepended to their modules.
function tableViews() {
  const out = [], seen = new Set()
  const stack = Object.values(window.Bokeh.index)
  while (stack.length) {
    const v = stack.pop()
    if (v == null || seen.has(v)) continue
    seen.add(v)
    if (v.tabulator) out.push(v)
    for (const c of (v.child_views || [])) stack.push(c)
  }
  return out
}
