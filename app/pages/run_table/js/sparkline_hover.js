// Hovering a sparkline (cells.sparkline_svg) shows the point under the cursor: a dot on the line and
// its x and y (as the table formats numbers, from the svg's data-x/data-y) in a tooltip. One listener
// per document; Tabulator cells live in shadow roots, so the svg is found in the event's composed path.
function installSparklineHover() {
  if (window.__damnitSparklineHover) return
  window.__damnitSparklineHover = true
  const SVG_NS = 'http://www.w3.org/2000/svg'
  let tip = null, dot = null, current = null

  function hide() {
    if (tip) tip.style.display = 'none'
    if (dot) dot.remove()
    current = null
  }

  function points(svg) {
    if (svg.__damnitPoints == null) {
      const line = svg.querySelector('polyline')
      const px = (line ? line.getAttribute('points') : '').trim().split(/\s+/).map(p => p.split(',').map(Number))
      const xs = (svg.getAttribute('data-x') || '').split(' ')
      const ys = (svg.getAttribute('data-y') || '').split(' ')
      svg.__damnitPoints = px.map((p, i) => ({px: p[0], py: p[1], x: xs[i], y: ys[i]}))
    }
    return svg.__damnitPoints
  }

  function show(svg, event) {
    const pts = points(svg)
    if (!pts.length) return hide()
    const box = svg.getBoundingClientRect()
    const view = svg.viewBox.baseVal
    const sx = (view && view.width) ? view.width / box.width : 1
    const cx = (event.clientX - box.left) * sx
    let best = pts[0]
    for (const p of pts) if (Math.abs(p.px - cx) < Math.abs(best.px - cx)) best = p
    if (tip == null) {
      tip = document.createElement('div')
      tip.className = 'dmn-spark-tip'
      Object.assign(tip.style, {
        position: 'fixed', zIndex: '10001', pointerEvents: 'none', font: '12px sans-serif',
        background: 'rgba(255,255,255,0.95)', color: '#000', border: '1px solid #888',
        borderRadius: '3px', padding: '1px 5px', whiteSpace: 'nowrap', display: 'none',
      })
      document.body.appendChild(tip)
    }
    tip.textContent = `x = ${best.x}, y = ${best.y}`
    tip.style.display = 'block'
    tip.style.left = Math.min(window.innerWidth - tip.offsetWidth - 4, event.clientX + 12) + 'px'
    tip.style.top = Math.max(0, box.top - tip.offsetHeight - 4) + 'px'
    if (dot == null) {
      dot = document.createElementNS(SVG_NS, 'circle')
      dot.setAttribute('class', 'dmn-spark-dot')
      dot.setAttribute('r', '2.5')
      dot.setAttribute('fill', '#d32f2f')
    }
    if (dot.parentNode !== svg) svg.appendChild(dot)
    dot.setAttribute('cx', String(best.px))
    dot.setAttribute('cy', String(best.py))
    current = svg
  }

  document.addEventListener('mousemove', (event) => {
    const svg = event.composedPath().find(n => n instanceof SVGSVGElement && n.classList.contains('dmn-spark'))
    if (svg) show(svg, event)
    else if (current) hide()
  }, true)
  document.addEventListener('scroll', hide, true)
}
