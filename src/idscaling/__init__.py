"""idscaling: does the intrinsic dimension of a corpus predict its scaling exponents?"""

__version__ = "0.1.0"
