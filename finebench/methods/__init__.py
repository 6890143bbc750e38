"""Method plugins. Importing this package registers every built-in method."""

# Registration order is the order of `bench list methods` and of `--methods all`: the baselines first.
from finebench.methods import level_of_cut  # noqa: F401, I001 - registers cut-fc, cut-last, cut-last2, cut-full, cut-stage
from finebench.methods import filter_attention  # noqa: F401 - registers filter-attention
from finebench.methods import semantic_pruning  # noqa: F401 - registers semantic-pruning
from finebench.methods import attention_transfer  # noqa: F401 - registers attention-transfer, kd, at+kd
from finebench.methods import attention_branch  # noqa: F401 - registers abn

# regularised fine-tuning, the baselines of TLlib's family
from finebench.methods import l2_sp  # noqa: F401 - registers l2-sp
from finebench.methods import delta  # noqa: F401 - registers delta
from finebench.methods import bss  # noqa: F401 - registers bss
from finebench.methods import lwf  # noqa: F401 - registers lwf
from finebench.methods import co_tuning  # noqa: F401 - registers co-tuning
from finebench.methods import stochnorm  # noqa: F401 - registers stochnorm
from finebench.methods import bi_tuning  # noqa: F401 - registers bi-tuning

# parameter-efficient near twins of filter attention, then schedules of plain fine-tuning
from finebench.methods import selective  # noqa: F401 - registers bitfit, bn-only
from finebench.methods import ssf  # noqa: F401 - registers ssf
from finebench.methods import lora  # noqa: F401 - registers lora
from finebench.methods import lp_ft  # noqa: F401 - registers lp-ft, wise-ft
from finebench.methods.base import Context, Method, Source, Stage
from finebench.methods.registry import METHODS, register_method

__all__ = ["METHODS", "Context", "Method", "Source", "Stage", "register_method"]
