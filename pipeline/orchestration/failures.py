"""How a task fails, sorted for the DAG's retry policy (standard library only at import).

``TransientError`` (a mirror or the DVC remote down) is worth retrying later;
``PermanentError`` (data that failed validation, bad params) is not: trying
again cannot help until a person changes something. Anything else is a plain
``StageFailed``. ``dags/retrain.py`` maps these classes to retry rules, so
they live in a module of their own that the DAG imports when it parses, apart
from the code that runs DVC (``orchestrate``) and publishes (``publish``).

``classify`` turns the output of a failed ``dvc repro`` into one of them, and
``error_lines`` keeps the lines of a long log that explain the failure.
"""

from __future__ import annotations

import json
import re
from pathlib import Path


class StageFailed(RuntimeError):
    """A stage or publish step failed; the message is what the task log shows."""


class TransientError(StageFailed):
    """Likely to pass on a later try: retried with back-off."""


class RemoteUnavailable(TransientError):
    """The DVC or git remote did not answer or refused a transfer."""


class MirrorUnavailable(TransientError):
    """No dataset mirror answered."""


class PermanentError(StageFailed):
    """Trying again cannot help until a person changes data or params: never retried."""


class DataValidationError(PermanentError):
    """The raw data failed the validate stage's expectations."""


class ParamsError(PermanentError):
    """params.yaml is unusable."""


def error_lines(output: str, stage: str) -> str:
    """The stage's own error message (``<stage>: error: ...`` and its indented
    continuation), else DVC's ``ERROR:`` lines, else the last lines."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(f"{stage}: error:")), None)
    if start is not None:
        end = start + 1
        while end < len(lines) and lines[end].startswith((" ", "\t")):
            end += 1
        return "\n".join(lines[start:end])
    dvc_errors = [line for line in lines if line.startswith("ERROR:")]
    return "\n".join(dvc_errors or lines[-20:])


def classify(stage: str, output: str, project: Path) -> StageFailed:
    """Turn a failed ``dvc repro`` into the exception the retry policy acts on."""
    message = error_lines(output, stage)
    if stage == "validate" and _validation_failed(project):
        return DataValidationError(
            f"validate: the raw data failed validation (not retried: fix the data or the "
            f"`validate` bounds in params.yaml)\n{message}")
    if re.search(r"error: params\.yaml: ", message):
        return ParamsError(f"{stage}: params.yaml is invalid (not retried)\n{message}")
    if stage == "fetch" and "every mirror failed" in message:
        return MirrorUnavailable(f"fetch: no dataset mirror answered (retried later)\n{message}")
    return StageFailed(f"{stage}: the stage failed\n{message}")


def _validation_failed(project: Path) -> bool:
    from pipeline import config

    try:
        return json.loads((project / config.VALIDATION_METRICS).read_text())["success"] is False
    except (OSError, ValueError, KeyError):
        return False
