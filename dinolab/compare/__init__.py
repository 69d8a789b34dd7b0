"""``dinolab compare``: zero-shot, k-NN, few-shot prototypes, linear classifiers and fine-tuning (head, last
blocks, LoRA; full on request) on one labelled set, with and without imbalance handling, scored with bootstrap
intervals."""

from . import finetune_methods as _finetune_methods  # noqa: F401 - registers the fine-tuning rows after the others
from .api import compare
from .methods import METHODS, Context, Method, register_method
from .runner import CompareResult, MethodResult, score, stratified_split

__all__ = ["compare", "METHODS", "Context", "Method", "register_method", "CompareResult", "MethodResult", "score",
           "stratified_split"]
