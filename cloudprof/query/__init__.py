"""Time ranges over merged and raw profiles; call trees, top tables and diffs of them."""

from cloudprof.query.diff import FunctionMove, diff_tree, movers
from cloudprof.query.ranges import parse_range
from cloudprof.query.reader import (NoData, QueryStats, Selection, iter_profiles, query_diff_tree, query_profile,
                                    query_tree)
from cloudprof.query.tree import FlameTree, FunctionStat, TreeBuilder, compile_search, label_filter, tree_of

__all__ = [
    "FlameTree",
    "FunctionMove",
    "FunctionStat",
    "NoData",
    "QueryStats",
    "Selection",
    "TreeBuilder",
    "compile_search",
    "diff_tree",
    "iter_profiles",
    "label_filter",
    "movers",
    "parse_range",
    "query_diff_tree",
    "query_profile",
    "query_tree",
    "tree_of",
]
