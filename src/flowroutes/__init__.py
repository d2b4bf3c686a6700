"""flowroutes: explain a transformer LM's prediction by its information flow routes (Ferrando & Voita, 2024).

Public API: `load_model`, `trace`, `Trace`, `Routes`, `FlowroutesError`, `to_circuit_tracer` /
`write_circuit_tracer` (routes as a circuit-tracer graph, docs/interop.md), `generate` / `Generation` (an answer of
many tokens, its routes and token attributions, docs/generation.md), `widget` (a trace's routes as an interactive
notebook widget, docs/web.md; needs the notebook extra).
"""

from .circuit_tracer import to_circuit_tracer, write_circuit_tracer
from .errors import FlowroutesError
from .generation import Generation, generate
from .models import load_model
from .notebook import widget
from .routes import Routes
from .trace import Trace, trace

__version__ = "0.1.0"

__all__ = ["FlowroutesError", "Generation", "Routes", "Trace", "__version__", "generate", "load_model",
           "to_circuit_tracer", "trace", "widget", "write_circuit_tracer"]
