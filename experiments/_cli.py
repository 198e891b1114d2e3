"""One error path and one log setup for every experiment binary.

- A user's mistake (:class:`alearn.train.ConfigError`, a bad flag or config-file argument,
  ``app.UsageError``) prints ``error: <message>`` on stderr and exits with status 2, without
  a traceback; ``--verbose`` shows it.
- A run that cannot go on (diverged loss, unreadable checkpoints) prints its message and
  exits with status 1; SIGTERM / SIGINT exit with 128 + the signal number and say that the
  same command resumes.
- Logs stay quiet: orbax's per-save INFO lines and JAX's "Unable to initialize backend"
  INFO lines are filtered out (warnings still show).

absl binaries call :func:`run(main)` instead of ``app.run(main)``; argparse binaries call
:func:`guard` around their work and :func:`quiet_logs` once.
"""

from __future__ import annotations

import difflib
import logging as std_logging
import re
import sys
import traceback
from typing import Callable

from absl import app, flags, logging

_VERBOSE = flags.DEFINE_bool("verbose", False, "Show tracebacks of errors (for debugging).")

USAGE_EXIT, RUN_EXIT = 2, 1


def _noise(record: std_logging.LogRecord) -> bool:
    path = record.pathname.replace("\\", "/")
    if "/orbax/" in path and record.levelno < std_logging.WARNING:
        return True
    msg = str(record.msg)
    return record.levelno < std_logging.WARNING and (
        "Unable to initialize backend" in msg or "xla_bridge" in path)


def quiet_logs() -> None:
    """Filters orbax's and JAX's INFO noise from the absl handler (idempotent)."""
    handler = logging.get_absl_handler()
    if not getattr(handler, "_alearn_quiet", False):
        handler.addFilter(lambda r: not _noise(r))
        handler._alearn_quiet = True  # pylint: disable=protected-access
    std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)


def _user_errors() -> tuple:
    from alearn.train.errors import ConfigError
    from alearn.data.tfds_source import DatasetNotFoundError
    return ConfigError, DatasetNotFoundError, app.UsageError


def _run_errors() -> tuple:
    from alearn.train.errors import CheckpointError
    return CheckpointError, FloatingPointError  # TrainingDivergedError is a FloatingPointError


def _verbose(argv=None) -> bool:
    argv = sys.argv if argv is None else argv
    if any(a in ("--verbose", "--verbose=true", "--verbose=True") for a in argv):
        return True
    return bool(_VERBOSE.present and _VERBOSE.value) if flags.FLAGS.is_parsed() else False


def fail(message: str, code: int, verbose: bool = False) -> None:
    """Prints ``error: message`` (and the current traceback if ``verbose``); exits ``code``."""
    if verbose:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def guard(fn: Callable[[], int | None], verbose: bool = False) -> int:
    """Calls ``fn()``, translating known errors into a message and an exit status."""
    from alearn.train.errors import TrainingInterrupted
    try:
        return fn() or 0
    except _user_errors() as e:
        fail(str(e), USAGE_EXIT, verbose)
    except TrainingInterrupted as e:
        fail(str(e), e.exit_code, verbose)
    except _run_errors() as e:
        fail(str(e), RUN_EXIT, verbose)
    except KeyboardInterrupt:
        fail("interrupted", 130, verbose)
    return 0


def _flag_message(e: BaseException) -> str:
    text = str(e)
    if "Traceback (most recent call last)" in text:  # a config file's get_config() raised
        head = text.split("Traceback (most recent call last)")[0].strip().rstrip(":")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        text = f"{head}: {lines[-1]}" if lines else head
    return " ".join(text.split()) or repr(e)


def _sibling_fields(argv: list[str], parents: list[str]) -> str:
    """The field names next to an unknown ``--config.a.b`` (loads the config file again)."""
    import importlib.util
    spec = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    if not spec:
        return ""
    path, _, arg = spec[0].partition(":")
    try:
        mod_spec = importlib.util.spec_from_file_location("_alearn_cli_config", path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        node = module.get_config(arg) if arg else module.get_config()
        for p in parents:
            node = node[p]
        return ", ".join(sorted(node.keys())) or "(none)"
    except Exception:  # noqa: BLE001  (only a hint; the error message stands without it)
        return ""


def _unknown_field(e: BaseException) -> tuple[str, str | None]:
    """(field, suggested field or None) from ml_collections' error for an unknown field.

    Its message comes wrapped (an AttributeError around a KeyError whose text is the quoted
    name, a newline and ``Did you mean "x" instead of "y"?``), so ``str(e)`` shows escaped
    quotes and a literal ``\\n``; this reads the innermost text instead.
    """
    inner: object = e
    while isinstance(inner, BaseException) and inner.args:
        inner = inner.args[0]
    text = str(inner)
    mean = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', text)
    if mean:
        return mean.group(2), mean.group(1)
    name = re.search(r'Key "([^"]+)" does not exist', text)
    if name:
        return name.group(1), None
    return text.splitlines()[0].strip().strip("\"'") if text.strip() else repr(e), None


def _parse_flags(argv: list[str]) -> list[str]:
    verbose = _verbose(argv)
    try:
        rest = flags.FLAGS(argv)
        if "config" in flags.FLAGS and flags.FLAGS["config"].value is not None:
            flags.FLAGS["config"].value.keys()  # ml_collections defers a load failure to here
        return rest
    except OSError as e:  # the config file does not exist or cannot be imported
        fail(_flag_message(e), USAGE_EXIT, verbose)
    except flags.Error as e:
        fail(f"{_flag_message(e)} (--helpshort lists the flags)", USAGE_EXIT, verbose)
    except (AttributeError, KeyError) as e:  # --config.<unknown field>=...
        field, suggestion = _unknown_field(e)
        bad = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")
               and a.split("=")[0].split(".")[-1] == field]
        flag = bad[0] if bad else f"--config.{field}"
        parents = flag[len("--config."):].split(".")[:-1]
        fields = _sibling_fields(argv, parents)
        if suggestion is None and fields:
            close = difflib.get_close_matches(field, fields.split(", "), n=1)
            suggestion = close[0] if close else None
        hint = (f" (did you mean '{'.'.join(['config', *parents, suggestion])}'?)" if suggestion
                else "")
        fail(f"unknown config field {flag[2:]!r}{hint}"
             + (f"; valid there: {fields}" if fields else ""), USAGE_EXIT, verbose)
    except (ValueError, TypeError) as e:  # a --config.<field>=<value> of the wrong type
        fail(_flag_message(e), USAGE_EXIT, verbose)
    return []


def run(main: Callable[[list[str]], int | None]) -> None:
    """``app.run(main)`` with the error path and quiet logs above."""
    def wrapped(argv):
        quiet_logs()
        sys.exit(guard(lambda: main(argv), _verbose()))
    app.run(wrapped, flags_parser=_parse_flags)
