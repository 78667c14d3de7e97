"""A GNU tar stream of one file, as `tar -c -S --owner 0 --group 0` writes it, holes skipped.

The code lives in the node program (which runs it on the node for native builds); this module
is its controller-side name.
"""

from amidsl.node.amidsl_node import BLOCK, RECORD, DataRegion, data_regions, tar_one_file

__all__ = ["BLOCK", "RECORD", "DataRegion", "data_regions", "tar_one_file"]
