"""The run report: one self-contained ``report.html`` in the run folder, written at the end of
training by ``ReportCallback`` and on demand by ``aevb report`` (both in aevb/training/report.py,
beside the loop that writes it)."""
from ..training.report import REPORT_FILE, ReportCallback, flatten, render_report, write_report

__all__ = ["REPORT_FILE", "ReportCallback", "flatten", "render_report", "write_report"]
