"""Error type for the PKI package.

One exception class lets the CLI turn every PKI problem (bad CSR file, missing CA,
mismatched key) into a one-line message instead of a traceback.
"""


class PkiError(Exception):
    """A PKI operation failed; the message names the file and the problem."""
