"""`hpscan dashboard`: a scan watched live in the browser, read-only, on this machine only.

view.py turns what a scan's source holds (a run folder's records and status) into the page's JSON, pure; the plot
is hpscan.report.parallel.figure, the very figure `hpscan report` writes. source.py reads a run folder when its
files change; server.py serves the page, its scripts (plotly.js from the installed plotly package: no CDN) and the
JSON as server-sent events on 127.0.0.1, GET only.
"""
