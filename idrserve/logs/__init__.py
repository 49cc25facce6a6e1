"""Usage reports from access logs (`idrserve logs report`) and what warming learns from them.

parse (both log formats, one line at a time) -> classify (route family, client kind, image,
cache key) -> aggregate / replay (bounded sums, an LRU replay) -> report (report.json) ->
render_html (report.html). docs/operations.md ("Usage reports") documents the keys.
"""
