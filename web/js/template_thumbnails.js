// Thumbnails of this pack's example workflows in ComfyUI's template browser. Both frontends (1.27, 1.5x) fetch
// /api/workflow_templates/<pack folder>/<name>.jpg through their media cache (a plain fetch, shown as a blob URL).
// ComfyUI 0.3.64 serves every file of example_workflows/ there; newer cores serve only <name>.json from that
// route (app/custom_node_manager.py), while this web folder is served whole by every core. So the pictures live
// in example_thumbnails/ here, and fetches of this pack's thumbnails are sent there; nothing else is touched.

const HERE = new URL("./example_thumbnails/", import.meta.url);
// /extensions/<pack folder>/template_thumbnails.js: the pack folder is also the templates' module name.
const PACK = decodeURIComponent(new URL(import.meta.url).pathname.split("/").at(-2));
const PREFIX = `/workflow_templates/${PACK}/`;

/** Where this pack's thumbnail `url` really is, or null for any other request. */
function thumbnailUrl(url) {
  if (!url) return null;
  const path = decodeURIComponent(new URL(url, location.href).pathname);
  const at = path.indexOf(PREFIX);
  if (at < 0 || !path.endsWith(".jpg")) return null;
  const name = path.slice(at + PREFIX.length, -".jpg".length);
  return name.includes("/") ? null : new URL(`${encodeURIComponent(name)}.jpg`, HERE).href;
}

const previousFetch = window.fetch;
window.fetch = function (input, init) {
  const url = typeof input === "string" || input instanceof URL ? String(input) : input?.url;
  return previousFetch.call(window, thumbnailUrl(url) ?? input, init);
};
