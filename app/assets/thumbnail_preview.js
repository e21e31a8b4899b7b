// Loaded in every page's <head> (app/server/main.py). Hovering a run-table thumbnail shows the image as stored
// (DAMNIT's 300 px thumbnail, `?full=1` from app/thumbnails.py) beside it, like the Qt GUI's tooltip.
// Panel renders inside shadow roots, so the hovered element is read from the event's composed path.
(() => {
  const SIZE = 320;
  let preview = null;

  function hide() {
    if (preview) preview.style.display = "none";
  }

  function show(thumb) {
    if (!preview) {
      preview = document.createElement("img");
      preview.className = "dmn-thumb-preview";
      preview.alt = "thumbnail preview";
      Object.assign(preview.style, {
        position: "fixed", zIndex: "10000", maxWidth: SIZE + "px", maxHeight: SIZE + "px",
        background: "#fff", border: "1px solid #888", boxShadow: "0 2px 8px rgba(0,0,0,.3)",
        pointerEvents: "none", display: "none",
      });
      document.body.appendChild(preview);
    }
    const url = new URL(thumb.src);
    url.searchParams.set("full", "1");
    if (preview.src !== url.href) preview.src = url.href;
    const box = thumb.getBoundingClientRect();
    const right = box.right + 8;
    preview.style.left = (right + SIZE > window.innerWidth ? Math.max(0, box.left - 8 - SIZE) : right) + "px";
    preview.style.top = Math.max(0, Math.min(box.top, window.innerHeight - SIZE)) + "px";
    preview.style.display = "block";
  }

  // mousemove, not mouseover: Chromium does not always send mouseover when the pointer leaves an
  // element inside a shadow root for one outside it.
  let current = null;
  document.addEventListener("mousemove", (event) => {
    const el = event.composedPath()[0];
    if (el === current) return;
    current = el;
    const isThumb = el instanceof HTMLImageElement && el.classList.contains("dmn-thumb")
      && !el.getAttribute("src").startsWith("data:");  // an inlined image has nothing larger to show
    if (isThumb) show(el); else hide();
  }, true);
  document.addEventListener("scroll", () => { current = null; hide(); }, true);
})();
