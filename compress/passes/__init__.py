"""Built-in passes, imported explicitly so that each registers itself: one algorithm per module."""
from compress.passes import awq  # noqa: F401
from compress.passes import distill  # noqa: F401
from compress.passes import gptq  # noqa: F401
from compress.passes import magnitude  # noqa: F401
from compress.passes import prune_structured  # noqa: F401
from compress.passes import rotate  # noqa: F401
from compress.passes import rtn  # noqa: F401
from compress.passes import signround  # noqa: F401
from compress.passes import sparsegpt  # noqa: F401
from compress.passes import wanda  # noqa: F401
