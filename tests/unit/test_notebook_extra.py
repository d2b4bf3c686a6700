"""The notebook widget's extra is optional: flowroutes imports without anywidget, and a widget asked for without it
is refused in one line that names the extra."""

import subprocess
import sys

import pytest

import flowroutes
from flowroutes import notebook


def test_importing_flowroutes_does_not_import_anywidget():
    code = "import sys, flowroutes; print('anywidget' in sys.modules, 'ipywidgets' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_a_widget_without_anywidget_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "anywidget", None)  # as if it were not installed: its import fails
    notebook._widget_class.cache_clear()
    try:
        with pytest.raises(flowroutes.FlowroutesError) as err:
            flowroutes.widget(object())
        assert str(err.value) == "the notebook widget needs anywidget: pip install 'flowroutes[notebook]'"
    finally:
        notebook._widget_class.cache_clear()
