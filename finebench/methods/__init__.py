"""Method plugins. Importing this package registers every built-in method."""

# Registration order is the order of `bench list methods` and of `--methods all`: the baselines first.
from finebench.methods import level_of_cut  # noqa: F401, I001 - registers cut-fc, cut-last, cut-last2, cut-full
from finebench.methods import filter_attention  # noqa: F401 - registers filter-attention
from finebench.methods import semantic_pruning  # noqa: F401 - registers semantic-pruning
from finebench.methods import attention_transfer  # noqa: F401 - registers attention-transfer, kd, at+kd
from finebench.methods import attention_branch  # noqa: F401 - registers abn
from finebench.methods.base import Context, Method, Source, Stage
from finebench.methods.registry import METHODS, register_method

__all__ = ["METHODS", "Context", "Method", "Source", "Stage", "register_method"]
