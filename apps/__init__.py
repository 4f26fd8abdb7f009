"""Streamlit explorer of run directories (a thin client of workbench, probes, steering and gating).

Start it with ``workbench app [RUN_DIR]`` (see ``docs/app.md``); ``apps/explorer.py`` is the entry script and
``apps/_pages/`` holds one script per page. ``apps._common`` finds artifacts under the run root, refuses
paths outside it, and caches the model and every model computation.
"""
