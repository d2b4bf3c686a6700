"""flowroutes: explain a transformer LM's prediction by its information flow routes (Ferrando & Voita, 2024).

Public API: `load_model`, `trace`, `Trace`, `Routes`, `FlowroutesError`.
"""

from .errors import FlowroutesError
from .models import load_model
from .routes import Routes
from .trace import Trace, trace

__version__ = "0.1.0"

__all__ = ["FlowroutesError", "Routes", "Trace", "__version__", "load_model", "trace"]
