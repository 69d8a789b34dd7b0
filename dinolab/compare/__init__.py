"""``dinolab compare``: zero-shot, k-NN, few-shot prototypes, linear classifiers (and, registered later,
fine-tuning) on one labelled set, with and without imbalance handling, scored with bootstrap intervals."""

from .api import compare
from .methods import METHODS, Context, Method, register_method
from .runner import CompareResult, MethodResult, score, stratified_split

__all__ = ["compare", "METHODS", "Context", "Method", "register_method", "CompareResult", "MethodResult", "score",
           "stratified_split"]
