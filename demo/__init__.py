"""The Gradio app of the workbench: `build_app(services) -> gr.Blocks` over `load_services(config)`.

Modules: `config` (CLI + env -> AppConfig), `services` (data, models, store, run, jobs), `handlers`
(Ask, judge, Annotate), `negatives` (Hard negatives tab), `reports` (Audit and Pipeline tabs),
`render` (escaped HTML), `run` (pipeline run directory view), `jobs` (background jobs), `ui` (tabs).
"""

from __future__ import annotations

from demo.ui import build_app, launch

__all__ = ["build_app", "launch"]
