"""The `modelreuse` command line: one subcommand per module, imported only when it runs.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Importing lazily keeps
``modelreuse crd`` fast (no torch or onnxruntime import) and lets each workload bring only what it needs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Modules add themselves here when their issue lands.
COMMANDS: dict[str, tuple[str, str]] = {
    "crd": ("modelreuse.api.crd", "print the generated ModelReuse CustomResourceDefinition as YAML"),
    "operator": ("modelreuse.kube.main", "run the operator"),
    "evaluate": ("modelreuse.runtime.evaluate", "score a model on the new domain's labelled holdout"),
    "serve": ("modelreuse.runtime.serve", "serve a model over the Open Inference Protocol v2"),
    "adapt": ("modelreuse.runtime.adapt", "fine-tune a model on the new domain's data into a new ONNX version"),
    "run": ("modelreuse.local.demo", "run a ModelReuse YAML on this machine, without a cluster"),
    "demo": ("modelreuse.local.demo", "run the bike-share reuse scenario end to end on this machine"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelreuse",
        description="Evaluate, gate, adapt, serve and retrain inherited models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()),
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("command", nargs="?", choices=sorted(COMMANDS), help="the command to run")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        args = _top_parser().parse_args(argv[:1])
        if args.version:
            from modelreuse import __version__

            print(__version__)
            return 0
        _top_parser().print_help()
        return 2
    name, rest = argv[0], argv[1:]
    module_name, text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"modelreuse {name}", description=text)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(rest)) or 0)
