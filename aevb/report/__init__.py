"""The run report: one self-contained ``report.html`` in the run folder (page.py), written at
the end of training by ``ReportCallback`` (callback.py) and on demand by ``aevb report``."""
from .callback import ReportCallback
from .page import REPORT_FILE, flatten, render_report, write_report

__all__ = ["REPORT_FILE", "ReportCallback", "flatten", "render_report", "write_report"]
