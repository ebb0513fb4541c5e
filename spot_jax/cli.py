"""`spot-jax` command line: gin-launched train / eval / infer jobs.

    spot-jax train --gin_file=test/tiny_prompt.gin --gin.MODEL_DIR="'/tmp/run'"
    python -m spot_jax.train --gin_file=... --gin.TRAIN_STEPS=100

`--gin_file` is looked up relative to the current directory, then the repo's `gin/` and any
`--gin_search_paths`. `--gin.NAME=VALUE` is shorthand for `--gin_bindings='NAME = VALUE'`; a
bare word value (`--gin.MODEL_DIR=/tmp/x`) is quoted for you. Bad input ends in one line on
stderr and exit status 1.
"""

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from spot_jax import runtime_flags

GIN_DIR = Path(__file__).resolve().parent.parent / "gin"
JOBS = {
    "train": ("spot_jax.train.trainer", "train"),
    "eval": ("spot_jax.train.inference", "evaluate_job"),
    "infer": ("spot_jax.train.inference", "infer_job"),
}


def _quote_if_bare(value: str) -> str:
    """Leaves Python literals and gin references alone; quotes bare words such as paths."""
    import ast

    v = value.strip()
    if v.startswith(("@", "%", "'", '"', "[", "(", "{")) or v in ("None", "True", "False"):
        return v
    try:
        ast.literal_eval(v)
        return v
    except (ValueError, SyntaxError):
        return repr(v)


def parse_gin_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="spot-jax")
    p.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
    p.add_argument("--gin_bindings", action="append", default=[], help="gin binding")
    p.add_argument("--gin_search_paths", default="", help="comma-separated extra gin dirs")
    p.add_argument("--multiprocess", action="store_true", help="call jax.distributed.initialize")
    p.add_argument("--coordinator_address", default=None)
    p.add_argument("--process_count", type=int, default=None)
    p.add_argument("--process_index", type=int, default=None)
    rewritten = []
    for arg in argv:
        m = re.fullmatch(r"--gin\.([\w./@]+)=(.*)", arg, flags=re.S)
        if m:
            rewritten += ["--gin_bindings", f"{m.group(1)} = {_quote_if_bare(m.group(2))}"]
        else:
            rewritten.append(arg)
    return p.parse_args(rewritten)


def _resolve(gin_file: str, search: list[Path]) -> str:
    for base in [Path.cwd(), *search]:
        candidate = base / gin_file
        if candidate.exists():
            return str(candidate)
    raise FileNotFoundError(
        f"gin file {gin_file!r} not found in the current directory or {', '.join(map(str, search))}"
    )


class _GinSearchNoise(logging.Filter):
    """Drops gin's ERROR 'Path not found' records: gin logs one for every search path that an
    `include` is *not* found in (it probes each as a Python package) before finding it in gin/.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.module == "resource_reader" and record.msg == "Path not found: %s")


def run_job(job: str, argv: list[str]) -> int:
    import importlib

    import gin

    logging.getLogger().addFilter(_GinSearchNoise())
    args = parse_gin_args(argv)
    if not args.gin_file:
        raise SystemExit(f"spot-jax {job}: give at least one --gin_file")
    if args.multiprocess or args.process_count:
        import jax

        jax.distributed.initialize(
            coordinator_address=args.coordinator_address,
            num_processes=args.process_count,
            process_id=args.process_index,
        )
    search = [Path(s) for s in args.gin_search_paths.split(",") if s] + [GIN_DIR]
    for path in search:
        gin.add_config_file_search_path(str(path))
    files = [_resolve(f, search) for f in args.gin_file]
    module_name, fn_name = JOBS[job]
    fn = getattr(importlib.import_module(module_name), fn_name)
    gin.parse_config_files_and_bindings(files, args.gin_bindings)
    model_dir = gin.query_parameter("%MODEL_DIR")
    if not isinstance(model_dir, str):
        raise ValueError("set MODEL_DIR, e.g. --gin.MODEL_DIR=/tmp/my_run")
    # eval/infer run on a training MODEL_DIR: their configs must not replace the training one.
    _write_config(model_dir, "config.gin" if job == "train" else f"config_{job}.gin")
    gin.get_configurable(fn)()
    return 0


def _write_config(model_dir: str, name: str = "config.gin") -> None:
    """Writes the config to MODEL_DIR/<name> (process 0).

    A different config already there (an earlier run's) is kept as `<name>.<time>` rather than
    overwritten, so a rerun that fails (e.g. refused for another model size) loses nothing.
    """
    import time

    import gin
    import jax
    from etils import epath

    if jax.process_index() == 0:
        path = epath.Path(model_dir)
        path.mkdir(parents=True, exist_ok=True)
        target, text = path / name, gin.config_str()
        if target.exists() and target.read_text() != text:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            kept = path / f"{name}.{stamp}"
            n = 1
            while kept.exists():  # two jobs in one second keep both earlier configs
                kept, n = path / f"{name}.{stamp}-{n}", n + 1
            target.rename(kept)
        target.write_text(text)


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    m = re.search(r"Required bindings for `(\w+)` not provided in config: \[(.*?)\]", text)
    if m:
        return (
            f"missing required setting(s) {m.group(2)} of {m.group(1)}: set the macro, "
            "e.g. --gin.MODEL_DIR=/path/to/dir (see the run file's header)"
        )
    m = re.search(r"(\w+)/macro\.value set to `%gin\.REQUIRED` but not subsequently", text)
    if m:
        return (
            f"missing required macro {m.group(1)}: set it, e.g. --gin.{m.group(1)}=VALUE "
            "(see the run file's header)"
        )
    first = text.splitlines()[0] if text else type(e).__name__
    return f"{type(e).__name__}: {first}"


# Commands that are not gin jobs: name -> "module:function", the function taking argv and
# returning an exit status. Each lives in the package that owns it.
COMMANDS = {
    "convert": "spot_jax.interop.commands:convert_main",
    "demo": "spot_jax.demo.command:demo_main",
    "export": "spot_jax.interop.commands:export_main",
    "few-shot": "spot_jax.spot.few_shot_protocol:few_shot_main",
    "import-prompt": "spot_jax.interop.commands:import_prompt_main",
    "library": "spot_jax.spot.commands:library_main",
    "tasks": "spot_jax.data.commands:tasks_main",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = sorted(JOBS) + sorted(COMMANDS)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in names:
        print(f"usage: spot-jax {{{','.join(names)}}} ...")
        print("  gin jobs: spot-jax train|eval|infer --gin_file=F [--gin.NAME=VALUE ...]")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    if argv[0] in JOBS:
        return run_gin_job(argv[0], argv[1:])
    return run_command(argv[0], argv[1:])


def run_command(name: str, argv: list[str]) -> int:
    """Runs a non-gin command; bad input -> one line on stderr, exit 1."""
    import importlib

    # Before the command's module can import JAX.
    runtime_flags.set_default_xla_flags()
    module_name, fn_name = COMMANDS[name].split(":")
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as e:
        print(f"spot-jax {name}: not available in this build ({e})", file=sys.stderr)
        return 2
    return _reporting_errors(name, lambda: int(fn(argv) or 0))


def run_gin_job(job: str, argv: list[str]) -> int:
    """Runs a job; bad input -> one line on stderr, exit 1 (tracebacks with SPOT_JAX_DEBUG=1)."""
    return _reporting_errors(job, lambda: run_job(job, argv))


def _reporting_errors(name: str, run) -> int:
    """Runs `run()` with our environment defaults; any error becomes one line and exit 1."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    runtime_flags.set_default_xla_flags()
    try:
        return run()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one clear line for users; the traceback on demand
        if os.environ.get("SPOT_JAX_DEBUG"):
            raise
        print(f"spot-jax {name}: error: {_one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
