"""Method plugins. Importing this package registers every built-in method."""

from finebench.methods import level_of_cut  # noqa: F401 - registers cut-fc, cut-last, cut-last2, cut-full
from finebench.methods.base import Context, Method, Stage
from finebench.methods.registry import METHODS, register_method

__all__ = ["METHODS", "Context", "Method", "Stage", "register_method"]
