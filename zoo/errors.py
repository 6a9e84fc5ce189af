"""What a failure says to a user: one line of zoo's own advice, never a library's unsafe one.

Torch-free (the CLI imports it before any command runs). Library errors keep their own types
(``FetchError``, ``CheckpointError`` ...: callers catch those); this module only words them.

* :data:`ANTICIPATED`: the exception types a bad file, server, cache or argument produces. The
  CLI prints their message and exits non-zero; anything else is a bug, reported as such.
* :func:`user_message`: ``str(err)`` cleaned for a user. torch's "re-run with
  ``weights_only=False``" advice would tell people to execute a pickle they do not trust, so it
  is replaced by what actually went wrong.
"""

from __future__ import annotations

import lzma
import re
import struct
import tarfile
import zipfile
import zlib

# Not imported here: safetensors (cheap, but part of the torch stack users may lack at --help
# time); matched by name instead. RuntimeError covers torch's own errors and RecursionError.
_ANTICIPATED_NAMES = frozenset({"SafetensorError", "UnpicklingError", "HeaderTooLarge"})

ANTICIPATED: tuple[type[BaseException], ...] = (
    OSError,  # files, permissions, full disks, connections
    ValueError,  # bad arguments, formats, JSON; UnicodeDecodeError
    LookupError,  # KeyError, IndexError: unknown names and tags
    TypeError,
    RuntimeError,  # torch (shapes, allocation), RecursionError, WeightsUnavailableError
    MemoryError,
    EOFError,
    struct.error,
    zlib.error,
    lzma.LZMAError,
    zipfile.BadZipFile,
    tarfile.TarError,
)

_TORCH_ADVICE = re.compile(
    r"Weights only load failed\..*?(?:\n\n|$)|"
    r"[^.\n]*`?weights_only`?[^.\n]*(?:False|false)[^.\n]*\.\s*"
    r"|Do it only if you got the file from a trusted source\.\s*"
    r"|Please use `torch\.serialization\.[^\n]*"
    r"|Check the documentation of torch\.load[^\n]*",
    re.DOTALL,
)


def is_anticipated(err: BaseException) -> bool:
    """Whether ``err`` is a failure of the input or environment rather than a bug in zoo."""
    # zoo's own error types (FetchError, ConversionError, ManifestError ...) are raised on
    # purpose with a message for the user; matched by module so that nothing is imported here.
    return isinstance(err, ANTICIPATED) or any(
        cls.__name__ in _ANTICIPATED_NAMES or cls.__module__.split(".")[0] == "zoo"
        for cls in type(err).__mro__
    )


def strip_torch_advice(text: str) -> str:
    """``text`` without torch's advice to load with ``weights_only=False`` (arbitrary code)."""
    if "weights_only" not in text and "Weights only load failed" not in text:
        return text
    cleaned = _TORCH_ADVICE.sub(" ", text)
    cleaned = re.sub(r"\s+", " ", cleaned).strip(" .;:")
    why = cleaned or "it holds objects other than tensors"
    return (
        f"the file is not a plain tensor checkpoint ({why}); zoo never unpickles arbitrary "
        "objects: get a .safetensors copy, or convert it where you trust it"
    )


def user_message(err: BaseException) -> str:
    """One message for ``err``: its text without quoting artefacts or unsafe advice."""
    if isinstance(err, RecursionError):
        return "input nested too deeply to parse (a corrupt or hostile file)"
    if isinstance(err, MemoryError):
        return "out of memory (a file declares more data than it holds, or the input is too big)"
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        text = err.args[0]  # str(KeyError) would add quotes around the message
    else:
        text = str(err)
    return strip_torch_advice(text) or type(err).__name__


__all__ = ["ANTICIPATED", "is_anticipated", "strip_torch_advice", "user_message"]
